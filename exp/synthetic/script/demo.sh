#!/usr/bin/env bash
# The whole synthetic pipeline (data, 4 training stages, PDA table, pictures) without make (docs/demo.md):
#   exp/synthetic/script/demo.sh [--force] [--redo STEP ...] [--threads N] [--opts ...]
# PYTHON picks the interpreter (default python3; checked by tools/launch.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec tools/launch.sh --single tools/demo.py "$@"
