#!/usr/bin/env bash
# Train the experiment of this folder, ../config.yaml (docs/training.md): GPUS processes (default 4); NNODES,
# NODE_RANK, MASTER_ADDR, MASTER_PORT for several nodes; extra arguments go to tools/train.py, e.g. --resume or
# --opts train.accumulate=4. Outputs go to ${SAVE_ROOT:-saved_model}/<experiment folder name>/.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
exec "$experiment/../../tools/launch.sh" 4 tools/train.py "$experiment/config.yaml" "$@"
