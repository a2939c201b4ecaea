#!/usr/bin/env bash
# Set up a virtual environment in .venv and train one model: dagtrain train ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/dagtrain train "$@"
