#!/usr/bin/env bash
# GPU node check for the MIC engine (needs the `gpu` extra: pip install -e '.[gpu,test]').
# In a fixed budget of 8 minutes on one GPU: the device and the vLLM build, the GPU-marked tests,
# and the cost-of-determinism table (`mic bench --determinism`: each seed mode x chunked prefill
# on / off) on the built-in tiny model, and on one small real model when --model gives a local
# folder. Prints one table; exits 1 when any check failed or ran out of its time.
# `--dry-run` prints the steps without running them (tests/engine/generate/test_gpu_check.py).
#
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR] [--model LOCAL_MODEL_DIR]
set -uo pipefail

DRY_RUN=0
OUT="gpu_check_results"
MODEL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --model) MODEL="${2:?--model needs a local model folder}"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (use --dry-run, --out DIR, --model DIR)" >&2; exit 2 ;;
  esac
done
if [[ -n "$MODEL" && "$DRY_RUN" == 0 && ! -d "$MODEL" ]]; then
  echo "gpu_check.sh: --model $MODEL is not a folder (give a local model directory)" >&2; exit 2
fi

PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."
BUDGET=480                 # seconds for everything: the issue's 8 minutes
START=$SECONDS
CHECKS="$OUT/checks.tsv"

# step NAME SECONDS CMD...: run CMD within min(SECONDS, what is left of the budget); record it.
step() {
  local name="$1" limit="$2"; shift 2
  echo "+ [$name, <= ${limit}s] $*"
  [[ "$DRY_RUN" == 1 ]] && return 0
  local left=$((BUDGET - (SECONDS - START)))
  (( limit > left )) && limit=$left
  local t0=$SECONDS rc
  if (( limit <= 0 )); then rc=124; else timeout "$limit" "$@"; rc=$?; fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$CHECKS"
}

if [[ "$DRY_RUN" == 0 ]]; then mkdir -p "$OUT" && : > "$CHECKS"; fi
step "gpu visible" 20 nvidia-smi --query-gpu=index,name,memory.total --format=csv
step "gpu build of vllm" 60 "$PY" -c "
import torch
from engine.generate.backends.device import detect_build
b = detect_build()
assert torch.cuda.is_available(), 'no CUDA device'
assert b.build == 'gpu', f'vLLM build is {b.build} ({b.reason}): install the gpu extra'
print(b.reason, '| gpus', torch.cuda.device_count())"
step "gpu tests" 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/engine \
  --junitxml="$OUT/gpu_tests.xml"
step "determinism table: tiny" 110 "$PY" -m engine.cli bench configs/tiny.toml --determinism \
  --prompts 2000 --rounds 2 --out "$OUT/bench_tiny.json"
if [[ -n "$MODEL" ]]; then
  step "determinism table: $(basename "$MODEL")" 140 "$PY" -m engine.cli bench configs/tiny.toml \
    --determinism --prompts 500 --rounds 1 --set "models.0.name=\"$(basename "$MODEL")\"" \
    --set "models.0.path=\"$MODEL\"" --set 'models.0.engine_args={max_model_len = 2048}' \
    --out "$OUT/bench_model.json"
fi

if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing was executed"; exit 0; fi
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
failed = 0
print(f"{'check':<44}{'result':>10}{'seconds':>9}")
for line in (out / "checks.tsv").read_text().splitlines():
    name, rc, secs = line.split("\t")
    verdict = {"0": "ok", "124": "timeout"}.get(rc, f"FAIL({rc})")
    failed += rc != "0"
    print(f"{name:<44}{verdict:>10}{secs:>9}")
for part in ("bench_tiny.json", "bench_model.json"):
    if (out / part).is_file():
        b = json.loads((out / part).read_text())
        for r in b["rows"]:
            label = f"  {r['model']}: chunked {'on ' if r['chunked_prefill'] else 'off'} {r['seed_mode']}"
            if "not_allowed" in r:
                print(f"{label:<44}{'-':>10}  {r['not_allowed']}")
            else:
                rate, ratio = r["generated_tokens_per_second"], r["ratio_to_fastest"]
                print(f"{label:<44}{rate:>10,.0f}  gen tok/s, {ratio:.2f} x fastest")
print("GPU check:", "FAILED" if failed else "passed", f"({out}/)")
sys.exit(1 if failed else 0)
PY
