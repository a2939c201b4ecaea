#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the main job (the README's first command):
# the interval experiment on real MNIST, dagtrain sweep ARGS (default: the seed's scale),
# on Dask's default threaded scheduler. Results land in results/<preset>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/dagtrain sweep "$@"
