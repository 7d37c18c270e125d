#!/usr/bin/env bash
# DeepLab's whole-frame masks of the training frames for the experiment of this folder, ../config.yaml
# (data.pseudo_labels: precomputed): once before training; run again to continue an interrupted run. Extra
# arguments go to tools/make_pseudo_labels.py, e.g. --device cuda; PYTHON as in tools/launch.sh.
set -euo pipefail
experiment="$(cd "$(dirname "$0")/.." && pwd)"
exec "$experiment/../../tools/launch.sh" --single tools/make_pseudo_labels.py "$experiment/config.yaml" "$@"
