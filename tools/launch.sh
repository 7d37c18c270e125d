#!/usr/bin/env bash
# The one launcher behind exp/*/script/*.sh: runs a tools/ entry point from the repository root, with plain python
# for one process, or with torchrun (`python -m torch.distributed.run` of the same interpreter, PYTHON, default
# python3) for several (GPUS processes per node; NNODES > 1 adds torchrun's static rendezvous from NODE_RANK,
# MASTER_ADDR and MASTER_PORT, the same command on every node).
#   tools/launch.sh DEFAULT_GPUS tools/<entry>.py ARGS...
set -euo pipefail
cd "$(dirname "$0")/.."
gpus="${GPUS:-$1}"
shift
nnodes="${NNODES:-1}"
if [[ "$gpus" -le 1 && "$nnodes" == 1 ]]; then
  exec "${PYTHON:-python3}" "$@"
fi
if [[ "$nnodes" == 1 ]]; then
  rendezvous=(--standalone)
else
  rendezvous=(--nnodes="$nnodes" --node_rank="${NODE_RANK:?set NODE_RANK}" --master_addr="${MASTER_ADDR:?set MASTER_ADDR}"
              --master_port="${MASTER_PORT:-29500}")
fi
exec "${PYTHON:-python3}" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node="$gpus" "$@"
