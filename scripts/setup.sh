#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with every
# dependency the library, the binaries and the tests need. Idempotent: a second
# run only checks what is installed. Needs only the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.bgan_tf_installed
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  # tensorflow-serving-api declares a dependency on the full "tensorflow"
  # package, which would overwrite tensorflow-cpu: take only its protos.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps tensorflow-serving-api==2.21.0
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
