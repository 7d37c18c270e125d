#!/usr/bin/env bash
# PDA table of the experiment of this folder, ../config.yaml: mIoU per key-frame distance 1..9, per-frame and
# propagation-only rows (docs/evaluation.md). CHECKPOINT (default: <experiment folder name>/best.pth under
# ${SAVE_ROOT:-saved_model}) is relative to the repository root; results go to
# ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/; GPUS > 1 shards the clips over torchrun processes;
# extra arguments go to tools/test_pda.py.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/$(basename "$experiment")/best.pth}"
exec "$experiment/../../tools/launch.sh" 1 tools/test_pda.py "$experiment/config.yaml" --checkpoint "$checkpoint" "$@"
