"""LayerLocal on 1 and 2 workers against Sync on 1, with the seed's formula and the cost model's prediction.

    python -m benchmarks.parallel [--rounds 3] [--intervals 1,10,100]

784-256-256-256-10 relu, batch 128, lr 0.05, one epoch of real MNIST. One worker is the
synchronous scheduler, two workers the threaded scheduler with two threads. Each figure
is a median over rounds; each speed-up is taken within a round against that round's Sync.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import dagtrain as dt
from benchmarks.common import machine_line
from dagtrain.experiments.sweep import sync_gaps


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intervals", default="1,10,100")
    args = parser.parse_args()
    data = dt.datasets.mnist()
    model = dt.MLP([784, 256, 256, 256, 10], seed=0)
    kw: dict[str, Any] = {"batch_size": 128, "epochs": 1, "lr": 0.05}
    sync = dt.compile(model, data, **kw)
    runs = [(dt.LayerLocal(int(k), mode), workers) for mode in ("sharded", "shared")
            for k in args.intervals.split(",") for workers in (1, 2)]
    plans = {s: dt.compile(model, data, s, **kw) for s, _ in runs}
    predicted = {(s, w): plans[s].analyze(workers=w).predicted_seconds for s, w in runs}
    rows: dict[tuple[dt.LayerLocal, int], list[tuple[float, float, float]]] = {r: [] for r in runs}
    sync.run("sync")  # warm-up
    for _ in range(args.rounds):
        t_seq = sync.run("sync").wall_time
        for s, workers in runs:
            result = plans[s].run("sync" if workers == 1 else "threads")
            gaps = sync_gaps(result.tasks)
            syncs = sum(1 for r in result.tasks if r.prefix == "sync")
            formula = t_seq / min(model.n_layers, workers) + syncs * (statistics.mean(gaps) if gaps else 0.0)
            rows[(s, workers)].append((result.wall_time, t_seq / result.wall_time, t_seq / formula))
    print(f"# LayerLocal parallel speed-up, {args.rounds} rounds\n\n{machine_line()}\n")
    print("| schedule | workers | median wall s | speed-up over Sync, 1 worker | seed's formula | "
          "cost model predicts s | measured / cost model |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (s, workers), values in rows.items():
        wall = statistics.median(v[0] for v in values)
        print(f"| {s} | {workers} | {wall:.3f} | {statistics.median(v[1] for v in values):.2f}x | "
              f"{statistics.median(v[2] for v in values):.2f}x | {predicted[(s, workers)]:.3f} | "
              f"{wall / predicted[(s, workers)]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
