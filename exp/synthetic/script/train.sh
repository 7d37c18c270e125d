#!/usr/bin/env bash
# Train one step of the synthetic pipeline, segmentation -> flow -> dmnet -> correction (docs/training.md):
#   exp/synthetic/script/train.sh segmentation [--resume] [--opts ...]   (or STAGE=flow exp/synthetic/script/train.sh)
# One process by default (a CPU is enough); GPUS and NNODES as in tools/launch.sh.
set -euo pipefail
stage="${STAGE:-}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  stage="$1"
  shift
fi
case "$stage" in
  segmentation|flow|dmnet|correction) ;;
  *) echo "$0: expected a stage (segmentation|flow|dmnet|correction) as first argument or STAGE," \
          "got '${stage//[^[:print:]]/?}'" >&2
     exit 2 ;;
esac
experiment="$(cd "$(dirname "$0")/.." && pwd)"
exec "$experiment/../../tools/launch.sh" 1 tools/train.py "$experiment/${stage}.yaml" "$@"
