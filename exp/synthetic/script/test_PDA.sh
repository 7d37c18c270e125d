#!/usr/bin/env bash
# PDA table of the synthetic pipeline (docs/evaluation.md). Without CHECKPOINT, tools/test_pda.py evaluates what
# ../correction.yaml trained (<train.save_root>/<experiment>/best.pth); CHECKPOINT names another file, relative to
# the repository root. Results go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/; GPUS > 1 shards
# the clips over torchrun processes; extra arguments go to tools/test_pda.py.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
checkpoint=()
if [[ -n "${CHECKPOINT:-}" ]]; then
  checkpoint=(--checkpoint="$CHECKPOINT")
fi
exec "$experiment/../../tools/launch.sh" 1 tools/test_pda.py "$experiment/correction.yaml" "${checkpoint[@]}" "$@"
