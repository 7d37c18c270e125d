#!/usr/bin/env bash
# Pictures of the synthetic pipeline (docs/evaluation.md).
# CHECKPOINT (default: synthetic_correction/final.pth) is relative to the repository root;
# pictures go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/show/; extra arguments go to tools/show.py.
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/synthetic_correction/final.pth}"
exec "$(dirname "$0")/../../../tools/launch.sh" 1 tools/show.py exp/synthetic/correction.yaml --checkpoint "$checkpoint" "$@"
