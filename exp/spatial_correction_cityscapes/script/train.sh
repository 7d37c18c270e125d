#!/usr/bin/env bash
# Train spatial_correction_cityscapes (docs/training.md): GPUS processes (default 4); NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# for several nodes; extra arguments go to tools/train.py, e.g. --resume or --opts train.accumulate=4.
exec "$(dirname "$0")/../../../tools/launch.sh" 4 tools/train.py exp/spatial_correction_cityscapes/config.yaml "$@"
