"""Run the whole benchmark suite: ``python -m benchmarks``. Each part prints its own table.

Parts: kernels (the machine's ceiling), overhead (numpy loop vs Sync on each scheduler),
parallel (LayerLocal on 1 and 2 workers), scale (compile cost per node). Pass ``--quick``
for fewer rounds and smaller graphs.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> None:
    """Run each part in its own process, so none inherits another's threads or caches."""
    quick = "--quick" in sys.argv[1:]
    parts = [
        ["benchmarks.kernels", "--repeats", "3" if quick else "7"],
        ["benchmarks.overhead", "--rounds", "2" if quick else "7"],
        ["benchmarks.parallel", "--rounds", "1" if quick else "3"],
        ["benchmarks.scale", "--max-nodes", "100000" if quick else "1000000"],
    ]
    for part in parts:
        print(f"\n$ python -m {' '.join(part)}", flush=True)
        subprocess.run([sys.executable, "-m", *part], check=True)


if __name__ == "__main__":
    main()
