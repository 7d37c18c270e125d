#!/usr/bin/env bash
# PDA table of the experiment of this folder, ../config.yaml: mIoU per key-frame distance 1..9, per-frame and
# propagation-only rows (docs/evaluation.md). Without CHECKPOINT, tools/test_pda.py evaluates what this config
# trained (<train.save_root>/<experiment>/best.pth); CHECKPOINT names another file, relative to the repository
# root. Results go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/; GPUS > 1 shards the clips over
# torchrun processes; extra arguments go to tools/test_pda.py.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
checkpoint=()
if [[ -n "${CHECKPOINT:-}" ]]; then
  checkpoint=(--checkpoint="$CHECKPOINT")
fi
exec "$experiment/../../tools/launch.sh" 1 tools/test_pda.py "$experiment/config.yaml" "${checkpoint[@]}" "$@"
