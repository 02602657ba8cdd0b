#!/usr/bin/env bash
# Set up the environment and run the main job on the offline default data
# (scikit-learn's digits): train BGAN, print mAP next to ITQ, save the model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m bgan_tf.train "$@"
