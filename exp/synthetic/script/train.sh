#!/usr/bin/env bash
# Train one step of the synthetic pipeline: segmentation -> flow -> dmnet -> correction (docs/training.md).
#   exp/synthetic/script/train.sh segmentation [--resume] [--opts train.epochs=2 ...]
#   STAGE=flow GPUS=2 exp/synthetic/script/train.sh
# One process by default (the CPU is enough); GPUS=N runs N processes (GPUs, or gloo on the CPU).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stage="${STAGE:-}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  stage="$1"
  shift
fi
if [[ ! -f "exp/synthetic/${stage:-?}.yaml" ]]; then
  echo "error: pick a stage: segmentation | flow | dmnet | correction (first argument or STAGE), got '${stage}'" >&2
  exit 2
fi
if [[ "${NNODES:-1}" == 1 ]]; then
  launch=(--standalone)
else
  launch=(--nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK}" --master_addr="${MASTER_ADDR:?set MASTER_ADDR}"
          --master_port="${MASTER_PORT:-29500}")
fi
exec torchrun "${launch[@]}" --nproc_per_node="${GPUS:-1}" tools/train.py "exp/synthetic/${stage}.yaml" "$@"
