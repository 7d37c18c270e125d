#!/usr/bin/env bash
# Pictures of the experiment of this folder, ../config.yaml: per-clip grids, distortion heat maps, error maps, a GIF
# and the legend (docs/evaluation.md), in one process. CHECKPOINT (default: <experiment folder name>/best.pth under
# ${SAVE_ROOT:-saved_model}) is relative to the repository root; pictures go to
# ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/show/; extra arguments go to tools/show.py.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
cd "$experiment/../.."
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/$(basename "$experiment")/best.pth}"
exec "${PYTHON:-python3}" tools/show.py "$experiment/config.yaml" --checkpoint "$checkpoint" "$@"
