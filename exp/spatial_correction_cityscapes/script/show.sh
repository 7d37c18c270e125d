#!/usr/bin/env bash
# Pictures of spatial_correction_cityscapes: per-clip grids, distortion heat maps, error maps, a GIF and the legend (docs/evaluation.md).
# CHECKPOINT (default: spatial_correction_cityscapes/best.pth) is relative to the repository root;
# pictures go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/show/; extra arguments go to tools/show.py.
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/spatial_correction_cityscapes/best.pth}"
exec "$(dirname "$0")/../../../tools/launch.sh" 1 tools/show.py exp/spatial_correction_cityscapes/config.yaml --checkpoint "$checkpoint" "$@"
