#!/usr/bin/env bash
# PDA evaluation of synthetic_correction on the synthetic val list: mIoU per key-frame distance 1..9 with the per-
# frame and propagation-only rows (docs/evaluation.md), into
# ${RESULT_ROOT:-result}/synthetic_correction/pda.{json,md}.
#   exp/synthetic/script/test_PDA.sh [--max-clips N] [--opts model.align_corners=false ...]
#   CHECKPOINT=path/to/model.pth GPUS=4 exp/synthetic/script/test_PDA.sh   # torchrun, clips sharded
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/synthetic_correction/final.pth}"
args=(exp/synthetic/correction.yaml --checkpoint "$checkpoint")
if [[ "${GPUS:-1}" -gt 1 ]]; then
  exec torchrun --standalone --nproc_per_node="$GPUS" tools/test_pda.py "${args[@]}" "$@"
fi
exec "${PYTHON:-python3}" tools/test_pda.py "${args[@]}" "$@"
