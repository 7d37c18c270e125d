#!/usr/bin/env bash
# The one command for a machine with an NVIDIA GPU: builds the resample2d extension for it (make setup), then runs
# every GPU check and writes one report (tools/gpu_check.py: result/gpu_check/report.json and report.md).
# Without a GPU it says so in one line and exits 1 before building anything.
#   tools/gpu_check.sh [--out-dir DIR] [--skip STEP...] [--amp fp16 bf16]
# PYTHON (python3) makes the virtual environment VENV (.venv), as `make setup` does. Both go to make, which would
# expand `$(...)` in them and hand them to a shell: they must be plain paths (letters, digits, . _ / + -).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
for name in python venv; do
  if [[ ! "${!name}" =~ ^[A-Za-z0-9._/+][A-Za-z0-9._/+-]*$ ]]; then
    value="${!name}"
    echo "gpu_check.sh: ${name^^}=${value//[^[:print:]]/?}: expected a plain path (letters, digits, . _ / + -)" >&2
    exit 2
  fi
done
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "error: needs an NVIDIA GPU (nvidia-smi lists none on this machine); nothing was run" >&2
  exit 1
fi
make setup PYTHON="$python" VENV="$venv"
exec "$venv/bin/python" tools/gpu_check.py "$@"
