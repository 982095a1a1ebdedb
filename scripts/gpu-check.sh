#!/usr/bin/env bash
# The whole GPU check, in one run of a few minutes on a machine with an NVIDIA GPU, from
# the package scripts/cuda-build.sh makes (unpack it, then run this script inside it):
#   1. the GPU tests (tests/gpu.rs: every op and a ThinAgeNet step against the CPU, bf16
#      against f32, seeded reproducibility);
#   2. ThinAgeNet 224×224 batch 32 training steps and inference with ldl
#      (examples/step_timing.rs) in f32 and bf16, also with cuDNN's non-deterministic
#      algorithms allowed (LDL_CUDNN=fast), and the same step in PyTorch eager
#      (benches/reference/train_step_torch.py) in f32 and AMP bf16, NCHW and
#      channels_last, when python3 has torch with CUDA; interleaved, in
#      GPU_CHECK_ROUNDS [2] rounds. (candle's own convolutions, LDL_CUDNN=0, run out of
#      an H200's 140 GB at this size, so they are left out.)
#   3. `ldl train` of ThinAgeNet at 224×224 on the built-in synthetic faces for a few
#      epochs (scripts/gpu-bench.sh), keeping the run folder; its plots, metrics and
#      summary are copied to RESULTS_DIR;
#   4. the NCCL engine with one rank (when `ldl` was built with `nccl`): configs/bdims.toml
#      for a few epochs on the GPU, once plainly and once with `run.distributed = "nccl"`
#      (the launcher's variables set by hand, as `mpirun -np 1` would), every figure of
#      every metrics.jsonl line compared;
#   5. one table of the figures (ranges over the rounds).
# Peak GPU memory is the largest `memory.used` nvidia-smi reports while a program runs,
# less what was in use before it started (the CUDA context included, for both ldl and
# PyTorch), sampled every 50 ms; each program also prints its allocator's own peak.
#
# Usage: gpu-check.sh [RESULTS_DIR]      (default: ./gpu-check-results)
# Environment: GPU_CHECK_STEPS [20] timed steps per figure; GPU_CHECK_TIMINGS, the
# timings to run (default: all eight of section 2); GPU_CHECK_EPOCHS [4] and
# GPU_CHECK_FACES [3000] for the `ldl train` run; GPU_CHECK_SKIP: space-separated parts
# to skip (tests, ldl, torch, train, nccl).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
results=${1:-$PWD/gpu-check-results}
mkdir -p "$results"
results=$(cd "$results" && pwd)
steps=${GPU_CHECK_STEPS:-20}
skip=" ${GPU_CHECK_SKIP:-} "
run=$here/run-on-gpu.sh
figures=$results/figures.tsv
: >"$figures"

section() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
skipped() { [[ $skip == *" $1 "* ]]; }

# Runs a command with a time limit while sampling the GPU's memory; its output goes to
# $results/NAME.log and to the terminal; prints the peak memory above the idle baseline.
measure() {
    local name=$1 limit=$2
    shift 2
    local samples=$results/$name.memory
    local baseline
    baseline=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n 1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$samples" 2>/dev/null &
    local sampler=$!
    timeout "$limit" "$@" 2>&1 | tee "$results/$name.log"
    local status=${PIPESTATUS[0]}
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    local peak
    peak=$(sort -n "$samples" | tail -n 1)
    echo "[$name: exit $status, peak GPU memory $((${peak:-0} - baseline)) MiB above the idle $baseline MiB]"
    printf '%s\tmemory\t%s\n' "$name" "$((${peak:-0} - baseline))" >>"$figures"
    printf '%s\tstatus\t%s\n' "$name" "$status" >>"$figures"
    return "$status"
}

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
"$run" --version
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())' 2>&1 | tail -n 1
nproc

if ! skipped tests; then
    section "1. GPU tests"
    measure tests 300 "$run" gpu-tests --nocapture --test-threads 4
fi

# One timing of ThinAgeNet 224×224 batch 32: ldl-PRECISION[-cudnn-fast] or torch-... .
timing() {
    local name=$1 tag=$2
    case $name in
        ldl-*)
            local precision=${name#ldl-}
            local mode=1
            [[ $precision == *-cudnn-fast ]] && mode=fast
            LDL_CUDNN=$mode measure "$name$tag" 180 "$run" step-timing --device cuda \
                --backbone thin-age-net --size 224 --batch 32 --precision "${precision%%-*}" \
                --steps "$steps"
            ;;
        torch-*)
            local flags=(--cuda)
            [[ $name == *amp-bf16* ]] && flags+=(--amp-bf16)
            [[ $name == *channels-last* ]] && flags+=(--channels-last)
            measure "$name$tag" 180 python3 "$here/train_step_torch.py" 32 224 32 "$steps" "${flags[@]}"
            ;;
    esac
}

has_torch=false
if ! skipped torch && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    has_torch=true
fi
if ! skipped ldl; then
    section "2. ThinAgeNet 224×224 batch 32: ldl and PyTorch eager, interleaved, ${GPU_CHECK_ROUNDS:-2} rounds"
    for round in $(seq 1 "${GPU_CHECK_ROUNDS:-2}"); do
        for name in ${GPU_CHECK_TIMINGS:-ldl-f32 torch-f32 ldl-bf16 torch-amp-bf16 torch-f32-channels-last \
            torch-amp-bf16-channels-last ldl-f32-cudnn-fast ldl-bf16-cudnn-fast}; do
            if [[ $name == torch-* && $has_torch == false ]]; then
                continue
            fi
            timing "$name" "-r$round"
        done
    done
    $has_torch || echo "no PyTorch with CUDA on this machine: its timings were skipped"
fi

if ! skipped train; then
    section "3. ldl train: ThinAgeNet 224×224 on synthetic faces"
    LDL_BENCH_DIR=$results/train LDL_BENCH_EPOCHS=${GPU_CHECK_EPOCHS:-4} \
        LDL_BENCH_FACES=${GPU_CHECK_FACES:-3000} measure train 300 "$here/gpu-bench.sh" "$run"
    run_dir=$(compgen -G "$results/train/runs/gpu-bench-*" | tail -n 1)
    if [[ -n $run_dir && -f $run_dir/metrics.jsonl ]]; then
        cp "$run_dir"/metrics.jsonl "$run_dir"/summary.json "$run_dir"/plots/*.png "$results/" 2>/dev/null
        python3 - "$run_dir/metrics.jsonl" <<'PY'
import json, sys


def flat(value, path=""):
    """(path, number) pairs of a JSON record, paths joined with dots."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flat(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from flat(item, f"{path}.{i}")
    elif isinstance(value, (int, float)):
        yield path, value


def first(pairs, *words):
    return next((v for k, v in pairs if all(w in k.lower() for w in words)), float("nan"))


print(f"{'epoch':>5} {'train loss':>10} {'val loss':>9} {'val MAE':>8} {'samples/s':>10}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    train, val = list(flat(r.get("train"))), list(flat(r.get("validation") or {}))
    print(f"{r['epoch']:>5} {first(train, 'total'):>10.4f} {first(val, 'total'):>9.4f} "
          f"{first(val, 'mae'):>8.3f} {r['samples_per_second']:>10.1f}")
PY
    fi
fi

if ! skipped nccl && readelf -d "$here/ldl" 2>/dev/null | grep -q libnccl; then
    section "4. NCCL with one rank against no engine: configs/bdims.toml, 5 epochs on the GPU"
    nccl_dir=$results/nccl
    mkdir -p "$nccl_dir"
    common=(train "$here/bdims.toml" --quiet --set optim.epochs=5 --set run.device='"cuda"')
    measure nccl-none 180 "$run" "${common[@]}" --set run.output_dir="\"$nccl_dir/none\""
    OMPI_COMM_WORLD_SIZE=1 OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_LOCAL_RANK=0 \
        measure nccl-one-rank 180 "$run" "${common[@]}" --set run.distributed='"nccl"' \
        --set run.output_dir="\"$nccl_dir/nccl\""
    python3 - "$nccl_dir/none/bdims-1/metrics.jsonl" "$nccl_dir/nccl/bdims-1/metrics.jsonl" <<'PY'
import json, sys


def numbers(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}/{i}")
    elif isinstance(value, (int, float)) and "second" not in path:
        yield path, value


try:
    runs = [[dict(numbers(json.loads(l))) for l in open(p)] for p in sys.argv[1:]]
except OSError as e:
    sys.exit(f"NCCL check: {e}")
pairs = [(k, a[k], b.get(k)) for a, b in zip(*runs) for k in a]
differing = [(k, x, y) for k, x, y in pairs if x != y]
print(f"NCCL check: {len(runs[0])} and {len(runs[1])} epochs, {len(pairs)} figures, "
      f"{len(differing)} differ" + (f"; first: {differing[0]}" if differing else " (equal)"))
sys.exit(1 if differing or not pairs or len(runs[0]) != len(runs[1]) else 0)
PY
    printf 'nccl-check\tstatus\t%s\n' "$?" >>"$figures"
fi

section "5. ThinAgeNet 224×224, batch 32 (img/s; memory: peak above idle, MiB; ranges over rounds)"
python3 - "$results" <<'PY'
import os, re, sys
results = sys.argv[1]
figures = {}
for line in open(os.path.join(results, "figures.tsv")):
    name, key, value = line.rstrip("\n").split("\t")
    figures.setdefault(name, {})[key] = value
groups = {}
for name, fig in figures.items():
    path = os.path.join(results, name + ".log")
    text = open(path, errors="replace").read() if os.path.exists(path) else ""
    train = re.search(r"train step[^(]*\(([\d.]+) img/s\)", text)
    infer = re.search(r"inference[^(]*\(([\d.]+) img/s\)", text)
    if not (train or infer):
        continue
    alloc = re.search(r"peak memory: (\d+) MiB (?:used|allocated), (\d+) MiB reserved", text)
    g = groups.setdefault(re.sub(r"-r\d+$", "", name), {"train": [], "infer": [], "memory": [], "alloc": [], "exit": []})
    g["train"] += [float(train.group(1))] if train else []
    g["infer"] += [float(infer.group(1))] if infer else []
    g["memory"] += [int(fig.get("memory", 0))]
    g["alloc"] += [f"{alloc.group(1)}/{alloc.group(2)}"] if alloc else []
    g["exit"] += [fig.get("status", "?")]


def span(values, fmt="{:.0f}"):
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


print(f"{'run':<30} {'train img/s':>12} {'infer img/s':>12} {'GPU MiB':>11} {'alloc/reserved':>15} {'exit':>6}")
for name, g in groups.items():
    print(f"{name:<30} {span(g['train']):>12} {span(g['infer']):>12} {span(g['memory']):>11} "
          f"{(g['alloc'] or ['-'])[-1]:>15} {','.join(sorted(set(g['exit']))):>6}")
for name, fig in figures.items():
    if name.startswith("nccl") and fig.get("status") not in (None, "0"):
        print(f"{name}: exit {fig['status']} (the NCCL check failed)")
tests = os.path.join(results, "tests.log")
if os.path.exists(tests):
    for line in open(tests, errors="replace"):
        if line.startswith("test result:"):
            print("GPU tests:", line.strip())
PY
