#!/usr/bin/env bash
# Build the `ldl` command with CUDA and cuDNN (`--features cudnn`) on a Linux x86_64
# machine that has no GPU, with the GPU tests and the step timing, and package them for a
# machine that has one.
#
# What it does, step by step (each step is skipped when its result is already there):
#   1. downloads the pinned CUDA 13.0 wheels from PyPI with `pip download --no-deps`
#      (nvcc, its crt headers and NVVM, CCCL, the runtime, NVRTC, cuRAND, cuBLAS, cuDNN and,
#      for the NCCL engine, NCCL);
#   2. unzips them into one toolkit tree, $LDL_CUDA_DIR/root/nvidia/cu13/{bin,include,lib},
#      and adds the unversioned `lib*.so` links the linker looks for (of cuDNN's wheel only
#      the headers and the `libcudnn.so.9` the linker needs: its engines are 1 GB);
#   3. checks that nvcc runs and compiles a kernel to PTX;
#   4. writes a stub `libcuda.so` (soname libcuda.so.1) into lib/stubs, exporting every `cu*`
#      driver function that cudarc's bindings declare: the driver library only exists where
#      the NVIDIA driver is installed, and the linker only needs the names;
#   5. runs `cargo build --release --locked -p ldl-cli --features cudnn,nccl` with the PTX built
#      for one compute capability (no nvidia-smi is needed), then builds the GPU tests
#      (tests/gpu.rs) and examples/step_timing.rs the same way;
#   6. packs the `ldl` binary, `gpu-tests`, `step-timing`, a `run-on-gpu.sh` launcher,
#      scripts/gpu-check.sh (the whole GPU check, see there), scripts/gpu-bench.sh (an
#      end-to-end `ldl train` timing) and the PyTorch reference into an xz tarball.
#
# LDL_CUDA_FEATURES is a comma-separated list: `cuda` (candle's own CUDA convolutions; packs
# only `ldl` and the launchers) or `cudnn`, and optionally `nccl` (`run.distributed =
# "nccl"`: one process per GPU) and `mpi` (needed by NCCL for more than one rank; Open MPI's
# libopenmpi-dev and libclang to build, Open MPI's libraries where it runs). The default,
# `cudnn,nccl`, trains on one GPU and checks the NCCL path with `mpirun -np 1` or the
# launcher's variables set by hand (see gpu-check.sh).
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
# provides) and the CUDA 13 libraries libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10, libnvrtc.so.13 and cuDNN 9 (libcudnn.so.9 and its engine libraries);
# `run-on-gpu.sh` finds their folders (PyTorch's CUDA 13 wheels hold them all) and puts
# them on LD_LIBRARY_PATH (LDL_CUDA_LIBS, a colon-separated list, chooses them instead).
# The driver must support CUDA 13.0.
#
# This script was written and checked on machines without a GPU: the binary it produces
# compiles and links here; the package ran on an NVIDIA H200 on 2026-12-04 (see
# docs/performance.md).

set -euo pipefail

die() {
    echo "cuda-build: error: $*" >&2
    exit 1
}
step() { echo "==> $*"; }

CUDA_DIR=${LDL_CUDA_DIR:-$HOME/.cache/ldl-cuda}
TARGET_DIR=${LDL_CUDA_TARGET_DIR:-$HOME/.cache/ldl-cuda-target}
FEATURES=${LDL_CUDA_FEATURES:-cudnn,nccl}
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
    nvidia-cudnn-cu13==9.21.1.3
)
# NCCL 2.30: the API of cudarc's `nccl` feature (nccl-02030).
has_feature() { [[ ,$FEATURES, == *,$1,* ]]; }
if has_feature nccl; then
    WHEELS+=(nvidia-nccl-cu13==2.30.7)
fi

case $(uname -s)-$(uname -m) in
    Linux-x86_64) ;;
    *) die "only Linux x86_64 is supported (this is $(uname -s) $(uname -m))" ;;
esac
[[ $COMPUTE_CAP =~ ^[0-9]+$ ]] || die "CUDA_COMPUTE_CAP must be a number like 90, not '$COMPUTE_CAP'"
IFS=, read -r -a feature_list <<<"$FEATURES"
for feature in "${feature_list[@]}"; do
    [[ $feature =~ ^(cuda|cudnn|nccl|mpi)$ ]] ||
        die "LDL_CUDA_FEATURES lists cuda or cudnn, and nccl or mpi, separated by commas: '$feature' is none of them"
done
has_feature cuda || has_feature cudnn || die "LDL_CUDA_FEATURES must include cuda or cudnn, not only '$FEATURES'"

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
    # cuDNN: the headers and the library the linker needs, not the engines it loads at run time.
    case $pin in
        nvidia-cudnn-*) prefixes=('nvidia/cudnn/include/' 'nvidia/cudnn/lib/libcudnn.so.') ;;
        nvidia-nccl-*) prefixes=('nvidia/nccl/include/' 'nvidia/nccl/lib/libnccl.so.') ;;
        *) prefixes=('nvidia/') ;;
    esac
    python3 - "$whl" "$TREE" "${prefixes[@]}" <<'PY' || die "cannot unzip $whl (delete it and rerun)"
import os, stat, sys, zipfile
wheel, tree, prefixes = sys.argv[1], sys.argv[2], tuple(sys.argv[3:])
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefixes) and not info.is_dir():
            path = z.extract(info, tree)
            # zipfile drops the executable bits (nvcc, ptxas, ...); put them back.
            if (info.external_attr >> 16) & stat.S_IXUSR:
                os.chmod(path, 0o755)
PY
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
CUDNN_LIB=$TREE/nvidia/cudnn/lib/libcudnn.so.9
[[ -f $CUDNN_LIB ]] || die "the cuDNN wheel did not produce $CUDNN_LIB; delete $TREE and rerun"
ln -sfn "$CUDNN_LIB" "$CUDA_ROOT/lib/libcudnn.so"
if has_feature nccl; then
    NCCL_LIB=$TREE/nvidia/nccl/lib/libnccl.so.2
    [[ -f $NCCL_LIB ]] || die "the NCCL wheel did not produce $NCCL_LIB; delete $TREE and rerun"
    ln -sfn "$NCCL_LIB" "$CUDA_ROOT/lib/libnccl.so"
fi

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
step "5/6 cargo build --release -p ldl-cli --features $FEATURES (sm_$COMPUTE_CAP, target dir $TARGET_DIR)"
start=$(date +%s)
cuda_cargo() {
    env CUDA_ROOT="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT" CUDA_HOME="$CUDA_ROOT" NVCC="$NVCC" \
        PATH="$CUDA_ROOT/bin:$PATH" CUDA_COMPUTE_CAP="$COMPUTE_CAP" CARGO_TARGET_DIR="$TARGET_DIR" \
        cargo "$@"
}
cuda_cargo build --release --locked -p ldl-cli --features "$FEATURES" ||
    die "cargo build failed (see above)"
BIN=$TARGET_DIR/release/ldl
[[ -x $BIN ]] || die "the build finished but $BIN is missing"
echo "    built in $(($(date +%s) - start)) s: $BIN ($(du -h "$BIN" | cut -f1))"
needed=$(readelf -d "$BIN" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[[ -n $needed ]] && echo "    needs: $needed"
grep -q "libcuda.so.1" <<<"$needed" || [[ -z $needed ]] ||
    die "$BIN does not link libcuda.so.1: was it built with --features cuda?"
extras=()
if has_feature cudnn; then
    cuda_cargo build --release --locked --features "$FEATURES" --example step_timing ||
        die "building examples/step_timing.rs failed (see above)"
    cuda_cargo test --release --locked --features "$FEATURES" --test gpu --no-run ||
        die "building tests/gpu.rs failed (see above)"
    # The test binary's path, from cargo's own report.
    tests_bin=$(cuda_cargo test --release --locked --features "$FEATURES" --test gpu --no-run \
        --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
    [[ -x $tests_bin ]] || die "cannot find the test binary of tests/gpu.rs"
    extras=("$TARGET_DIR/release/examples/step_timing:step-timing" "$tests_bin:gpu-tests")
    echo "    also built: examples/step_timing.rs, tests/gpu.rs"
fi

# 6. Package ----------------------------------------------------------------------------
step "6/6 package"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
name=ldl-cuda13-sm$COMPUTE_CAP-$rev-x86_64-linux
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
stage=$probe/$name
mkdir -p "$stage"
cp "$BIN" "$stage/ldl"
for pair in "${extras[@]}"; do
    cp "${pair%%:*}" "$stage/${pair##*:}"
done
cp scripts/run-on-gpu.sh scripts/gpu-bench.sh scripts/gpu-check.sh benches/reference/train_step_torch.py "$stage/"
cp configs/bdims.toml "$stage/"
chmod +x "$stage"/*.sh "$stage/ldl"
tarball=$OUT_DIR/$name.tar.xz
tar -C "$probe" -cJf "$tarball" "$name" || die "cannot write $tarball"
echo
echo "binary:  $BIN"
echo "package: $tarball ($(du -h "$tarball" | cut -f1))"
echo "on the GPU machine: tar -xJf $name.tar.xz && $name/gpu-check.sh"
