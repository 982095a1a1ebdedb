#!/usr/bin/env bash
# Runs a program of the CUDA package that scripts/cuda-build.sh makes, from the folder it
# was unpacked to:
#   ./run-on-gpu.sh train config.toml ...     the `ldl` command
#   ./run-on-gpu.sh gpu-tests [FILTER]        the GPU tests (tests/gpu.rs)
#   ./run-on-gpu.sh step-timing --device cuda examples/step_timing.rs
#
# Needs the NVIDIA driver (libcuda.so.1, CUDA 13.0 or newer) and the CUDA 13 libraries
# libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13,
# for the cuDNN build libcudnn.so.9, and for the NCCL build libnccl.so.2 (NCCL 2.30 or
# newer). Each is looked for in LDL_CUDA_LIBS (a colon-separated
# list of folders), else ./lib, the CUDA toolkit under /usr/local, the system's library
# folders, and the `nvidia` pip wheels of the first python3 (PyTorch's CUDA 13 wheels hold
# them all); the folders found go on LD_LIBRARY_PATH.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

program=ldl
case ${1:-} in
    gpu-tests | step-timing)
        program=$1
        shift
        ;;
esac
[[ -x $here/$program ]] || {
    echo "run-on-gpu.sh: $here/$program is not in this package" >&2
    exit 1
}

needed=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudnn.so.9 libnccl.so.2)
# cuDNN and NCCL are needed only by the builds that link them (without readelf, assume
# the program links both).
optional=()
if command -v readelf >/dev/null; then
    links=$(readelf -d "$here/$program")
    grep -q 'libcudnn.so' <<<"$links" || optional+=(libcudnn.so.9)
    grep -q 'libnccl.so' <<<"$links" || optional+=(libnccl.so.2)
fi

candidates=()
if [[ -n ${LDL_CUDA_LIBS:-} ]]; then
    IFS=: read -r -a candidates <<<"$LDL_CUDA_LIBS"
else
    candidates=("$here/lib" /usr/local/cuda-13.0/lib64 /usr/local/cuda/lib64
        /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
    # Every `lib` folder of the pip wheels under the `nvidia` namespace (cu13/lib, cudnn/lib, ...).
    while IFS= read -r dir; do
        candidates+=("$dir")
    done < <(python3 -c 'import glob, nvidia, os
for root in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(d)' 2>/dev/null || true)
fi

folders=()
missing=()
for lib in "${needed[@]}"; do
    found=
    for dir in "${candidates[@]}"; do
        if [[ -e $dir/$lib ]]; then
            found=$dir
            break
        fi
    done
    if [[ -z $found ]]; then
        [[ " ${optional[*]:-} " == *" $lib "* ]] || missing+=("$lib")
    elif [[ " ${folders[*]:-} " != *" $found "* ]]; then
        folders+=("$found")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "run-on-gpu.sh: cannot find ${missing[*]}; set LDL_CUDA_LIBS to the folders that hold them" >&2
    exit 1
fi
path=$(IFS=:; echo "${folders[*]:-}")
export LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$here/$program" "$@"
