#!/usr/bin/env bash
# GPU node check for the MIC engine (needs the `gpu` extra: pip install -e '.[gpu,test]').
# Runs the GPU-marked tests, the real-engine tests and the engine-overhead benchmark on the
# built-in tiny model, then prints a table. It cannot run on the project's CPU machines;
# `--dry-run` prints the steps without running them (exercised by tests/engine/test_gpu_check.py).
#
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR]
set -euo pipefail

DRY_RUN=0
OUT="gpu_check_results"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (use --dry-run or --out DIR)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."

step() {
  echo "+ $*"
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

step mkdir -p "$OUT"
step nvidia-smi --query-gpu=index,name,memory.total --format=csv
step "$PY" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA device'; print('vllm', vllm.__version__, 'gpus', torch.cuda.device_count())"
step "$PY" -m pytest -q -m gpu tests/engine --junitxml="$OUT/gpu_tests.xml"
step "$PY" -m pytest -q -m engine tests/engine --junitxml="$OUT/engine_tests.xml"
step "$PY" benchmarks/engine_overhead.py --prompts 2000 --n 4 --max-tokens 16 --out "$OUT/engine_overhead.json"
step "$PY" -m engine.cli bench configs/tiny.toml --prompts 2000 --logprobs 0,1,5,20 --out "$OUT/bench.json"
step "$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
overhead = json.load(open(f"{out}/engine_overhead.json"))
print(f"{'measurement':<40}{'generated tok/s':>16}")
for name, rate in overhead["plain"].items():
    print(f"{name:<40}{rate:>16,.0f}")
for k, m in overhead["mic_run"].items():
    print(f"{'mic run k=' + k:<40}{m['generated_tokens_per_second']:>16,.0f}")
for name, ratio in overhead["ratios"].items():
    print(f"{name:<40}{ratio:>16.3f}")
PY
if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing was executed"; fi
