#!/usr/bin/env bash
# PDA evaluation of spatial_correction_cityscapes on the Cityscapes val list: mIoU per key-frame distance 1..9 with
# the per-frame and propagation-only rows (docs/evaluation.md), into
# ${RESULT_ROOT:-result}/spatial_correction_cityscapes/pda.{json,md}.
#   exp/spatial_correction_cityscapes/script/test_PDA.sh [--max-clips N] [--opts model.align_corners=false ...]
#   CHECKPOINT=path/to/model.pth GPUS=4 exp/spatial_correction_cityscapes/script/test_PDA.sh   # torchrun, clips sharded
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/spatial_correction_cityscapes/best.pth}"
args=(exp/spatial_correction_cityscapes/config.yaml --checkpoint "$checkpoint")
if [[ "${GPUS:-1}" -gt 1 ]]; then
  exec torchrun --standalone --nproc_per_node="$GPUS" tools/test_pda.py "${args[@]}" "$@"
fi
exec "${PYTHON:-python3}" tools/test_pda.py "${args[@]}" "$@"
