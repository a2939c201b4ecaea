#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="[test]" bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
