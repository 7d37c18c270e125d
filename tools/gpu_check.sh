#!/usr/bin/env bash
# The one command for a machine with an NVIDIA GPU: builds the resample2d extension for it (make setup), then runs
# every GPU check and writes one report (tools/gpu_check.py: result/gpu_check/report.json and report.md).
# Without a GPU it says so in one line and exits 1 before building anything.
#   tools/gpu_check.sh [--out-dir DIR] [--skip STEP...] [--amp fp16 bf16]
# PYTHON (python3) makes the virtual environment VENV (.venv), as `make setup` does.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "error: needs an NVIDIA GPU (nvidia-smi lists none on this machine); nothing was run" >&2
  exit 1
fi
venv="${VENV:-.venv}"
make setup PYTHON="${PYTHON:-python3}" VENV="$venv"
exec "$venv/bin/python" tools/gpu_check.py "$@"
