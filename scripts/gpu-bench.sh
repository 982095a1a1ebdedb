#!/usr/bin/env bash
# Times ThinAgeNet training steps at 224×224 with the CUDA build of `ldl` (see
# scripts/cuda-build.sh), through the command line: `ldl train` on the built-in synthetic
# faces (rendered in memory, nothing to download), full-KL loss, Adam, batch 32, on
# `cuda`. Each epoch's training wall time and throughput come from the run's metrics.jsonl;
# the first epoch includes CUDA start-up and kernel loading, so read the later ones.
#
# What it measures is the trainer's end-to-end step: loading (faces rendered and augmented
# by the loader threads, in parallel with the GPU), forward, loss, backward and the
# optimiser step. When the loader cannot keep up, the figures are a lower bound of the
# GPU's speed; raise LDL_BENCH_THREADS or compare with a smaller image size to check.
#
# Usage: scripts/gpu-bench.sh [LDL]
#   LDL: the command to run, default `./run-on-gpu.sh` next to this script when unpacked from
#        the cuda-build tarball, else `ldl` on PATH. Any `ldl` works with LDL_BENCH_DEVICE=cpu.
# Environment variables (defaults in brackets):
#   LDL_BENCH_DEVICE [cuda]  LDL_BENCH_SIZE [224]  LDL_BENCH_BATCH [32]
#   LDL_BENCH_FACES [3000: about 2100 training faces, 65 steps per epoch]
#   LDL_BENCH_EPOCHS [3]  LDL_BENCH_THREADS [number of CPUs]  LDL_BENCH_WIDTH [1.0]
#   LDL_BENCH_PRECISION [f32; bf16 for mixed precision]
#   LDL_BENCH_DIR [a temporary folder, removed afterwards]

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if (($# > 0)); then
    ldl=$1
elif [[ -x $here/run-on-gpu.sh ]]; then
    ldl=$here/run-on-gpu.sh
else
    ldl=ldl
fi
device=${LDL_BENCH_DEVICE:-cuda}
size=${LDL_BENCH_SIZE:-224}
batch=${LDL_BENCH_BATCH:-32}
faces=${LDL_BENCH_FACES:-3000}
epochs=${LDL_BENCH_EPOCHS:-3}
threads=${LDL_BENCH_THREADS:-$(nproc)}
width=${LDL_BENCH_WIDTH:-1.0}
precision=${LDL_BENCH_PRECISION:-f32}

command -v "$ldl" >/dev/null || {
    echo "gpu-bench: cannot run '$ldl'; pass the ldl command (or run-on-gpu.sh) as argument" >&2
    exit 1
}
if [[ -n ${LDL_BENCH_DIR:-} ]]; then
    work=$LDL_BENCH_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

cat >"$work/bench.toml" <<EOF
[task]
name = "gpu-bench"

[[task.axes]]
name = "age"
min = 0
max = 100
step = 1

[data]
source = "builtin:faces"
image_size = $size
loader_threads = $threads
group_column = "identity"
split = { validation = 0.15, test = 0.15 }
augment = { flip = true }

[data.faces]
count = $faces

[data.labels]
age = { value = "apparent_age", std = "apparent_age_std" }

[model]
backbone = "thin-age-net"
width = $width

[loss]
kind = "full-kl"

[optim]
lr = 0.001
batch_size = $batch
epochs = $epochs

[run]
seed = 1
device = "$device"
precision = "$precision"
output_dir = "$work/runs"
EOF

echo "ldl: $ldl ($("$ldl" --version))"
echo "ThinAgeNet (width $width) ${size}×${size}, batch $batch, $faces faces, $epochs epochs, device $device, $precision, $threads loader threads"
command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$ldl" train "$work/bench.toml" --quiet
metrics=$(compgen -G "$work/runs/gpu-bench-*/metrics.jsonl" | tail -n 1)
python3 - "$metrics" "$batch" <<'EOF'
import json, sys
batch = int(sys.argv[2])
print(f"{'epoch':>5} {'train s':>8} {'samples/s':>10} {'ms/step':>8}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    sps = r["samples_per_second"]
    print(f"{r['epoch']:>5} {r['train_seconds']:>8.2f} {sps:>10.1f} {1000 * batch / sps:>8.1f}")
EOF
