"""Run the whole benchmark suite: ``python -m benchmarks``. Each part prints its own table.

Parts: kernels (the machine's ceiling), overhead (numpy loop vs Sync on each scheduler),
peer (PyTorch on the CPU; skipped without the ``bench`` extra), parallel (LayerLocal on
1 and 2 workers), scale (compile cost per node). Pass ``--quick`` for fewer rounds and
smaller graphs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys


def main() -> None:
    """Run each part in its own process, so none inherits another's threads or caches."""
    quick = "--quick" in sys.argv[1:]
    parts = [
        ["benchmarks.kernels", "--repeats", "3" if quick else "7"],
        ["benchmarks.overhead", "--rounds", "2" if quick else "7"],
        ["benchmarks.peer", "--rounds", "2" if quick else "5"],
        ["benchmarks.parallel", "--rounds", "1" if quick else "9"],  # 9: one round in 3-4 can run at half speed
        ["benchmarks.scale", "--max-nodes", "100000" if quick else "1000000"],
    ]
    for part in parts:
        if part[0] == "benchmarks.peer" and importlib.util.find_spec("torch") is None:
            print("\n(benchmarks.peer skipped: PyTorch is not installed; pip install -e .[bench])")
            continue
        print(f"\n$ python -m {' '.join(part)}", flush=True)
        subprocess.run([sys.executable, "-m", *part], check=True)


if __name__ == "__main__":
    main()
