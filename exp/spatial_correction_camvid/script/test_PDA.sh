#!/usr/bin/env bash
# PDA table of spatial_correction_camvid: mIoU per key-frame distance 1..9, per-frame and propagation-only rows (docs/evaluation.md).
# CHECKPOINT (default: spatial_correction_camvid/best.pth) is relative to the repository root;
# results go to ${RESULT_ROOT:-result}/<experiment>/<checkpoint file stem>/;
# GPUS > 1 shards the clips over torchrun processes; extra arguments go to tools/test_pda.py.
checkpoint="${CHECKPOINT:-${SAVE_ROOT:-saved_model}/spatial_correction_camvid/best.pth}"
exec "$(dirname "$0")/../../../tools/launch.sh" 1 tools/test_pda.py exp/spatial_correction_camvid/config.yaml --checkpoint "$checkpoint" "$@"
