#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'HELP'
usage: tools/gpu_check.sh [--output DIR] [--skip STEP ...] [--amp {fp16,bf16} ...] [--step-timeout SECONDS]
       make gpu-check ARGS="..."

On a machine with an NVIDIA GPU: installs like `make setup` (which compiles the resample2d CUDA extension), then
runs every check of the CUDA path, each step in its own process, and writes one report.

options (passed to tools/gpu_check.py):
  --output DIR            report folder (default: result/gpu_check); refuses a non-empty folder it did not write
  --skip STEP ...         steps to leave out: environment cuda_tests suite ddp_syncbn amp fast_cuda_graphs benchmark
  --amp {fp16,bf16} ...   AMP dtypes of the one-step training checks (default: fp16 bf16)
  --step-timeout SECONDS  time a step may take before it fails (default: 3600)
  -h, --help              this help

environment: PYTHON (python3) creates the virtual environment VENV (.venv), as `make setup` does.
Writes report.md, report.json and logs/<step>.log; exit status 1 when a step failed or there is no GPU.
HELP
}

for arg in "$@"; do
  if [[ "$arg" == -h || "$arg" == --help ]]; then usage; exit 0; fi
done
# PYTHON and VENV go to make, which would expand `$(...)` in them and hand them to a shell: plain paths only.
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
