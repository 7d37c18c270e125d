#!/usr/bin/env bash
# The whole synthetic pipeline (data, 4 training stages, PDA table, pictures) without make (docs/demo.md):
#   exp/synthetic/script/demo.sh [--force] [--redo STEP ...] [--threads N] [--opts ...]
# PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec "${PYTHON:-python3}" tools/demo.py "$@"
