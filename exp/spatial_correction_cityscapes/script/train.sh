#!/usr/bin/env bash
# Train spatial_correction_cityscapes with torchrun, one process per GPU (docs/training.md).
#   GPUS=4 exp/spatial_correction_cityscapes/script/train.sh [--resume] [--opts train.accumulate=4 ...]
# Several nodes: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (torchrun's static rendezvous), same command on each.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${NNODES:-1}" == 1 ]]; then
  launch=(--standalone)
else
  launch=(--nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK}" --master_addr="${MASTER_ADDR:?set MASTER_ADDR}"
          --master_port="${MASTER_PORT:-29500}")
fi
exec torchrun "${launch[@]}" --nproc_per_node="${GPUS:-4}" tools/train.py exp/spatial_correction_cityscapes/config.yaml "$@"
