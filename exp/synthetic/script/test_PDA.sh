#!/usr/bin/env bash
# PDA table of the synthetic pipeline (docs/evaluation.md).
# CHECKPOINT (default: <experiment folder name>_correction/final.pth under ${SAVE_ROOT:-saved_model}) is relative to
# the repository root; results go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/;
# GPUS > 1 shards the clips over torchrun processes; extra arguments go to tools/test_pda.py.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/$(basename "$experiment")_correction/final.pth}"
exec "$experiment/../../tools/launch.sh" 1 tools/test_pda.py "$experiment/correction.yaml" \
  --checkpoint="$checkpoint" "$@"
