#!/usr/bin/env bash
# Set up the environment and run the whole test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian's chromium for the browser test of the search page. Needs root or
# sudo; without them the browser test skips with its reason (outside CI).
if [ -x /usr/bin/chromium ] || [ "$(id -u)" = "0" ] || command -v sudo >/dev/null; then
  bash scripts/install_browser.sh
fi
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
