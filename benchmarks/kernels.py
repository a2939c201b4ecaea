"""The machine's ceiling: float32 GFLOP/s of the model's own matmul shapes and of a large matmul.

    python -m benchmarks.kernels [--repeats 7]

BLAS is pinned to one thread, as in every dagtrain worker. Each figure is the median of
``--repeats`` timings (min and max beside it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import machine_line

SHAPES = [  # (m, k, n): what 784-256-256-10 at batch 128 multiplies, forward and backward
    ("forward L1  128x784 @ 784x256", 128, 784, 256),
    ("forward L2  128x256 @ 256x256", 128, 256, 256),
    ("backward L1 784x128 @ 128x256 (dW)", 784, 128, 256),
    ("backward L2 128x256 @ 256x256 (dx)", 128, 256, 256),
    ("large 2048x2048 @ 2048x2048", 2048, 2048, 2048),
]


def gflops(m: int, k: int, n: int, repeats: int) -> list[float]:
    """GFLOP/s of ``repeats`` timed products of an (m, k) and a (k, n) float32 matrix."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # about 0.2 GFLOP per timing
    a @ b  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        out.append(2 * m * k * n * inner / (time.perf_counter() - t) / 1e9)
    return out


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"# Kernel ceiling: float32 matmul, 1 BLAS thread\n\n{machine_line()}\n")
    print("| product | median GFLOP/s | min | max |\n|---|---:|---:|---:|")
    with threadpool_limits(1, "blas"):
        for name, m, k, n in SHAPES:
            v = gflops(m, k, n, args.repeats)
            print(f"| {name} | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} |", flush=True)


if __name__ == "__main__":
    main()
