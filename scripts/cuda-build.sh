#!/usr/bin/env bash
# Build the `ldl` command with CUDA (`--features cuda`) on a Linux x86_64 machine that
# has no GPU, and package it for a machine that has one.
#
# What it does, step by step (each step is skipped when its result is already there):
#   1. downloads the pinned CUDA 13.0 wheels from PyPI with `pip download --no-deps`
#      (nvcc, its crt headers and NVVM, CCCL, the runtime, NVRTC, cuRAND and cuBLAS);
#   2. unzips them into one toolkit tree, $LDL_CUDA_DIR/root/nvidia/cu13/{bin,include,lib},
#      and adds the unversioned `lib*.so` links the linker looks for;
#   3. checks that nvcc runs and compiles a kernel to PTX;
#   4. writes a stub `libcuda.so` (soname libcuda.so.1) into lib/stubs, exporting every `cu*`
#      driver function that cudarc's bindings declare: the driver library only exists where
#      the NVIDIA driver is installed, and the linker only needs the names;
#   5. runs `cargo build --release --locked -p ldl-cli --features cuda` with the PTX built
#      for one compute capability (no nvidia-smi is needed);
#   6. packs the `ldl` binary, a `run-on-gpu.sh` launcher and scripts/gpu-bench.sh (a
#      ThinAgeNet 224×224 training-step timing) into an xz tarball.
#
# Usage: scripts/cuda-build.sh [OUTPUT_DIR]         (run from anywhere inside the repository)
#
# Environment variables:
#   LDL_CUDA_DIR          where the wheels and the toolkit tree go (default: $HOME/.cache/ldl-cuda;
#                         about 2 GB once unpacked, outside the repository)
#   LDL_CUDA_TARGET_DIR   cargo's target directory for this build (default:
#                         $HOME/.cache/ldl-cuda-target, about 1 GB, kept apart from the CPU
#                         build's cache)
#   CUDA_COMPUTE_CAP      compute capability the kernels are compiled for (default: 90, Hopper;
#                         e.g. 80 for A100, 89 for L4/RTX 40xx)
#   PIP                   the pip command to use (default: `python3 -m pip`, else `pip3`)
#   LDL_DIST_DIR          output folder for the tarball when no argument is given (default: dist)
#
# At run time the binary needs the NVIDIA driver (it links libcuda.so.1, which the driver
# provides) and the CUDA 13 libraries libcudart.so.13, libcublas.so.13, libcublasLt.so.13 and
# libcurand.so.10; `run-on-gpu.sh` puts their folder on LD_LIBRARY_PATH
# (set LDL_CUDA_LIBS to choose it). The driver must support CUDA 13.0.
#
# This script was written and checked on machines without a GPU: the binary it produces
# compiles and links, but it has not been run on a GPU by this script's author.

set -euo pipefail

die() {
    echo "cuda-build: error: $*" >&2
    exit 1
}
step() { echo "==> $*"; }

CUDA_DIR=${LDL_CUDA_DIR:-$HOME/.cache/ldl-cuda}
TARGET_DIR=${LDL_CUDA_TARGET_DIR:-$HOME/.cache/ldl-cuda-target}
COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
OUT_DIR=${1:-${LDL_DIST_DIR:-dist}}

WHEEL_DIR=$CUDA_DIR/wheels
TREE=$CUDA_DIR/root
CUDA_ROOT=$TREE/nvidia/cu13

# name==version, exactly as on PyPI. cudarc 0.19 supports CUDA up to 13.4; 13.0 matches
# the oldest CUDA 13 driver.
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-curand==10.4.0.35
    nvidia-cublas==13.0.2.14
)

case $(uname -s)-$(uname -m) in
    Linux-x86_64) ;;
    *) die "only Linux x86_64 is supported (this is $(uname -s) $(uname -m))" ;;
esac
[[ $COMPUTE_CAP =~ ^[0-9]+$ ]] || die "CUDA_COMPUTE_CAP must be a number like 90, not '$COMPUTE_CAP'"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel 2>/dev/null) ||
    die "run this script from a checkout of the ldl repository"
cd "$REPO"
command -v cargo >/dev/null || die "cargo not found on PATH (install Rust from https://rustup.rs)"
command -v cc >/dev/null || die "no C compiler 'cc' (needed for the libcuda stub; install gcc)"
command -v c++ >/dev/null || die "no C++ compiler 'c++' (nvcc needs one as host compiler; install g++)"

# Looks up the wheel file of one `name==version` pin; prints nothing when absent.
wheel_file() {
    local name=${1%%==*} version=${1##*==}
    compgen -G "$WHEEL_DIR/${name//-/_}-${version}-*.whl" | head -n 1 || true
}

# 1. Download ---------------------------------------------------------------------------
step "1/6 CUDA wheels in $WHEEL_DIR"
mkdir -p "$WHEEL_DIR"
missing=()
for pin in "${WHEELS[@]}"; do
    [[ -n $(wheel_file "$pin") ]] || missing+=("$pin")
done
if ((${#missing[@]} == 0)); then
    echo "    all ${#WHEELS[@]} wheels already downloaded"
else
    if [[ -n ${PIP:-} ]]; then
        read -r -a pip_cmd <<<"$PIP"
    elif python3 -m pip --version >/dev/null 2>&1; then
        pip_cmd=(python3 -m pip)
    elif command -v pip3 >/dev/null; then
        pip_cmd=(pip3)
    else
        die "pip is missing: install it (e.g. 'apt-get install python3-pip') or set PIP to a pip command"
    fi
    "${pip_cmd[@]}" --version >/dev/null 2>&1 || die "'${pip_cmd[*]}' does not run"
    echo "    downloading ${missing[*]}"
    "${pip_cmd[@]}" download --no-deps --only-binary=:all: -d "$WHEEL_DIR" "${missing[@]}" ||
        die "pip download failed for: ${missing[*]} (is PyPI reachable? see pip's message above)"
    for pin in "${missing[@]}"; do
        [[ -n $(wheel_file "$pin") ]] || die "pip reported success but no wheel for $pin is in $WHEEL_DIR"
    done
fi

# 2. Unpack -----------------------------------------------------------------------------
step "2/6 toolkit tree in $CUDA_ROOT"
mkdir -p "$TREE/.unpacked"
for pin in "${WHEELS[@]}"; do
    whl=$(wheel_file "$pin")
    stamp=$TREE/.unpacked/$(basename "$whl")
    [[ -e $stamp ]] && continue
    echo "    unpacking $(basename "$whl")"
    if command -v unzip >/dev/null; then
        unzip -q -o "$whl" 'nvidia/*' -d "$TREE" || die "cannot unzip $whl (delete it and rerun)"
    else
        python3 - "$whl" "$TREE" <<'EOF' || die "cannot unzip $whl (delete it and rerun)"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("nvidia/")])
EOF
    fi
    touch "$stamp"
done
[[ -d $CUDA_ROOT/bin && -d $CUDA_ROOT/include && -d $CUDA_ROOT/lib ]] ||
    die "the wheels did not produce $CUDA_ROOT/{bin,include,lib}; delete $TREE and rerun"
# Python's zipfile drops the executable bits; unzip keeps them. Either way, make sure.
chmod +x "$CUDA_ROOT"/bin/* "$CUDA_ROOT"/nvvm/bin/* 2>/dev/null || true
# The wheels ship only versioned libraries (libcublas.so.13); `-lcublas` needs libcublas.so.
for lib in "$CUDA_ROOT"/lib/lib*.so.*; do
    [[ -f $lib ]] || continue
    name=$(basename "$lib")
    link=$CUDA_ROOT/lib/${name%%.so.*}.so
    [[ -e $link ]] || ln -s "$name" "$link"
done

# 3. nvcc -------------------------------------------------------------------------------
step "3/6 nvcc"
NVCC=$CUDA_ROOT/bin/nvcc
[[ -x $NVCC ]] || die "$NVCC is missing or not executable"
nvcc_version=$("$NVCC" --version 2>&1) || die "nvcc does not run:
$nvcc_version"
grep -q "release 13.0" <<<"$nvcc_version" ||
    die "expected nvcc release 13.0, got: $(tail -n 2 <<<"$nvcc_version")"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '__global__ void k(float *x) { x[threadIdx.x] *= 2.0f; }\n' >"$probe/k.cu"
"$NVCC" -ptx -arch="sm_$COMPUTE_CAP" -o "$probe/k.ptx" "$probe/k.cu" >"$probe/log" 2>&1 ||
    die "nvcc cannot compile a kernel for sm_$COMPUTE_CAP:
$(cat "$probe/log")"
echo "    $(grep release <<<"$nvcc_version"), compiles for sm_$COMPUTE_CAP"

# 4. libcuda stub -----------------------------------------------------------------------
step "4/6 libcuda stub"
cargo fetch --locked --target x86_64-unknown-linux-gnu >/dev/null || die "cargo fetch failed (are the crates reachable?)"
cudarc_version=$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
[[ -n $cudarc_version ]] || die "cudarc is not in Cargo.lock"
bindings=$(compgen -G "${CARGO_HOME:-$HOME/.cargo}/registry/src/*/cudarc-$cudarc_version/src/driver/sys/mod.rs" |
    head -n 1) || true
[[ -n $bindings ]] || die "cannot find cudarc $cudarc_version's driver bindings in the cargo registry"
STUB_DIR=$CUDA_ROOT/lib/stubs
stub=$STUB_DIR/libcuda.so
stamp=$STUB_DIR/.cudarc-$cudarc_version
if [[ -e $stub && -e $stamp ]]; then
    echo "    $stub is up to date"
else
    mkdir -p "$STUB_DIR"
    rm -f "$STUB_DIR"/.cudarc-*
    # Every function returns CUDA_ERROR_UNKNOWN (999); the stub is never loaded at run time.
    grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | awk '{ print $4 }' | sort -u |
        awk '{ printf "int %s(void) { return 999; }\n", $1 }' >"$probe/libcuda.c"
    count=$(wc -l <"$probe/libcuda.c")
    ((count > 100)) || die "found only $count driver functions in $bindings"
    cc -shared -fPIC -fno-builtin -Wl,-soname,libcuda.so.1 -o "$stub" "$probe/libcuda.c" ||
        die "cannot compile the libcuda stub"
    touch "$stamp"
    echo "    $stub: $count functions from cudarc $cudarc_version"
fi

# 5. Build ------------------------------------------------------------------------------
step "5/6 cargo build --release -p ldl-cli --features cuda (sm_$COMPUTE_CAP, target dir $TARGET_DIR)"
start=$(date +%s)
env CUDA_ROOT="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT" CUDA_HOME="$CUDA_ROOT" NVCC="$NVCC" \
    PATH="$CUDA_ROOT/bin:$PATH" CUDA_COMPUTE_CAP="$COMPUTE_CAP" CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build --release --locked -p ldl-cli --features cuda ||
    die "cargo build failed (see above)"
BIN=$TARGET_DIR/release/ldl
[[ -x $BIN ]] || die "the build finished but $BIN is missing"
echo "    built in $(($(date +%s) - start)) s: $BIN ($(du -h "$BIN" | cut -f1))"
needed=$(readelf -d "$BIN" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[[ -n $needed ]] && echo "    needs: $needed"
grep -q "libcuda.so.1" <<<"$needed" || [[ -z $needed ]] ||
    die "$BIN does not link libcuda.so.1: was it built with --features cuda?"

# 6. Package ----------------------------------------------------------------------------
step "6/6 package"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
name=ldl-cuda13-sm$COMPUTE_CAP-$rev-x86_64-linux
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
stage=$probe/$name
mkdir -p "$stage"
cp "$BIN" "$stage/ldl"
cat >"$stage/run-on-gpu.sh" <<'EOF'
#!/usr/bin/env bash
# Runs the CUDA build of `ldl` next to this script: `./run-on-gpu.sh train config.toml ...`.
# Needs the NVIDIA driver (libcuda.so.1, CUDA 13.0 or newer) and the CUDA 13 libraries
# libcudart.so.13, libcublas.so.13, libcublasLt.so.13 and libcurand.so.10:
# their folder comes from LDL_CUDA_LIBS, else ./lib, the CUDA toolkit in /usr/local, or the
# `nvidia-*` pip wheels of the first python3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
libs=${LDL_CUDA_LIBS:-}
if [[ -z $libs ]]; then
    wheels=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
    for dir in "$here/lib" /usr/local/cuda-13.0/lib64 /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $wheels; do
        if [[ -e $dir/libcublas.so.13 ]]; then
            libs=$dir
            break
        fi
    done
fi
if [[ -z $libs ]]; then
    echo "run-on-gpu.sh: cannot find the CUDA 13 libraries (libcublas.so.13 ...); set LDL_CUDA_LIBS to their folder" >&2
    exit 1
fi
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$here/ldl" "$@"
EOF
cp scripts/gpu-bench.sh "$stage/gpu-bench.sh"
chmod +x "$stage/run-on-gpu.sh" "$stage/ldl" "$stage/gpu-bench.sh"
tarball=$OUT_DIR/$name.tar.xz
tar -C "$probe" -cJf "$tarball" "$name" || die "cannot write $tarball"
echo
echo "binary:  $BIN"
echo "package: $tarball ($(du -h "$tarball" | cut -f1))"
echo "on the GPU machine: tar -xJf $name.tar.xz && $name/run-on-gpu.sh --help && $name/gpu-bench.sh"
