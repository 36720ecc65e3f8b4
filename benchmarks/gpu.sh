#!/usr/bin/env bash
# The GPU checks and benchmark rows in one go, for a machine with a CUDA GPU whose Python has the
# project's dependencies (the package itself need not be installed: it runs from src/):
#
#     benchmarks/gpu.sh [OUTPUT_DIR]
#
# 1. the GPU tests (tests/test_gpu.py: mixed precision, face detection, protect and verify);
# 2. speed.py --part gpu: one min-min round, float32 vs bf16 x chunk, at 32 and 128 px;
# 3. speed.py --part detect: finding faces in full-size photos, CPU vs GPU;
# 4. speed.py --part scaling on the GPU: 200 and all (709) face crops, 50 full-size photos.
# Steps 3-4 and the face tests read ../shared/data (or UNLEARN_BENCH_DATA for speed.py). Each
# step runs under its own time limit, so a slow one leaves the others' results; speed.json and
# speed.md (with the GPU sections added) and one log are copied to OUTPUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-benchmarks/results/gpu-run}")
mkdir -p "$out"
log="$out/gpu-run.log"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step SECONDS NAME COMMAND...: run it under a time limit, its output into the log
    local seconds=$1 name=$2 started=$SECONDS status
    shift 2
    echo "== $name (limit ${seconds} s): $*" | tee -a "$log"
    timeout "$seconds" "$@" >>"$log" 2>&1
    status=$?
    echo "== $name: exit $status after $((SECONDS - started)) s" | tee -a "$log"
}

step 30 environment bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv; nproc; python3 -c "import torch; print(torch.__version__, torch.version.cuda,
    torch.cuda.get_device_name(), torch.cuda.is_bf16_supported())"'
step 90 gpu-tests python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
step 150 min-min-round python3 benchmarks/speed.py --part gpu --resolutions 32,128
step 60 face-detection python3 benchmarks/speed.py --part detect --device cuda
step 240 protect-scaling python3 benchmarks/speed.py --part scaling --device cuda \
    --crop-counts 200,1000 --photo-counts 50
cp benchmarks/results/speed.json benchmarks/results/speed.md "$out/"
grep -E "passed|failed|error|Error" "$log" | tail -n 15
awk '/^## /{shown = /Min-min round on|Finding faces|scaling-gpu/} shown' benchmarks/results/speed.md
