#!/usr/bin/env bash
# PDA table of the synthetic pipeline (docs/evaluation.md).
# CHECKPOINT (default: synthetic_correction/final.pth) is relative to the repository root;
# results go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/;
# GPUS > 1 shards the clips over torchrun processes; extra arguments go to tools/test_pda.py.
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/synthetic_correction/final.pth}"
exec "$(dirname "$0")/../../../tools/launch.sh" 1 tools/test_pda.py exp/synthetic/correction.yaml --checkpoint "$checkpoint" "$@"
