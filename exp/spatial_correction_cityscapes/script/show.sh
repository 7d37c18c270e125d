#!/usr/bin/env bash
# Pictures of spatial_correction_cityscapes on the Cityscapes val list (docs/evaluation.md): for each clip of
# eval.show_clips a grid of every step from key frame t-9 to t (frames, propagated, distortion, corrected; errors at
# t), a GIF and the legend, into ${RESULT_ROOT:-result}/spatial_correction_cityscapes/show/.
#   exp/spatial_correction_cityscapes/script/show.sh [--clips 0 5 7] [--distance 5] [--tile-width 384]
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/spatial_correction_cityscapes/best.pth}"
args=(exp/spatial_correction_cityscapes/config.yaml --checkpoint "$checkpoint")
exec "${PYTHON:-python3}" tools/show.py "${args[@]}" "$@"
