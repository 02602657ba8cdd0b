#!/usr/bin/env bash
# Install Debian's chromium for the browser test of the search page
# (tests/search/test_service_browser.py drives it through Playwright with
# executable_path=/usr/bin/chromium). Idempotent: does nothing if present.
# Needs root (or sudo) and the Debian package mirror.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
/usr/bin/chromium --version
