#!/usr/bin/env bash
# Validate the top-level BUILD with a real Bazel, fully offline:
#   1. install Bazel 2.1.0 from the npm registry into .bazel/ (gitignored; skipped
#      when already there),
#   2. `bazel build` of every py target found by `bazel query //...`, manual ones
#      included (missing files or bad labels fail here),
#   3. `bazel test //...`: the light pytest targets (heavy ones are tags=["manual"]),
#      run with the project venv's python3 (first on PATH).
# WORKSPACE points rules_cc, rules_java, remote_coverage_tools and rules_python at
# stubs in third_party/bazel_stubs so nothing is downloaded.
# Extra arguments are passed to `bazel test` (e.g. a target list instead of //...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BAZEL_VERSION=2.1.0
PREFIX=$ROOT/.bazel
BAZEL=$PREFIX/node_modules/@bazel/bazel-linux_x64/bazel-$BAZEL_VERSION-linux-x86_64
if [ ! -x "$BAZEL" ]; then
  npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error \
    "@bazel/bazel-linux_x64@$BAZEL_VERSION" >&2
fi

if [ ! -x .venv/bin/python3 ]; then
  echo "error: .venv is missing: run scripts/setup.sh first" >&2
  exit 2
fi
# The autodetecting Python toolchain runs `python3` from PATH (--python_path is ignored).
export PATH="$ROOT/.venv/bin:$PATH"

# Bazel's client talks to its server over loopback: make sure it is up (no-op normally).
if command -v ip >/dev/null 2>&1 && ip link show lo 2>/dev/null | grep -q 'state DOWN'; then
  ip link set lo up 2>/dev/null || true
fi

# Everything Bazel writes stays under .bazel/ (gitignored and in .bazelignore).
STARTUP=(--output_user_root="$PREFIX/root" --nohome_rc --nosystem_rc)
bazel() { "$BAZEL" "${STARTUP[@]}" "$@"; }
trap 'bazel shutdown >/dev/null 2>&1 || true' EXIT

# 1. Build every target, including tags=["manual"] ones that //... skips.
targets=$(bazel query --noshow_progress 'kind("py_.* rule", //...)')
# shellcheck disable=SC2086
bazel build --noshow_progress $targets
# 2. Run the light tests (every non-manual test under //..., or the given targets).
if [ $# -eq 0 ]; then set -- //...; fi
bazel test --noshow_progress "$@"
