#!/usr/bin/env bash
# Pictures of the experiment of this folder, ../config.yaml: per-clip grids, distortion heat maps, error maps, a GIF
# and the legend (docs/evaluation.md), in one process. Without CHECKPOINT, tools/show.py draws what this config
# trained (<train.save_root>/<experiment>/best.pth); CHECKPOINT names another file, relative to the repository
# root. Pictures go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/show/; extra arguments go to
# tools/show.py; PYTHON as in tools/launch.sh.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
checkpoint=()
if [[ -n "${CHECKPOINT:-}" ]]; then
  checkpoint=(--checkpoint="$CHECKPOINT")
fi
exec "$experiment/../../tools/launch.sh" --single tools/show.py "$experiment/config.yaml" "${checkpoint[@]}" "$@"
