"""LayerLocal on a dask.distributed LocalCluster, with the dashboard, a timeline and a performance report.

    python examples/cluster_dashboard.py [--workers 2] [--k 10] [--epochs 1] [--max-steps N] [--out DIR] [--pause S]

Starts two worker processes on 127.0.0.1 and prints the dashboard's URL: open it and watch
the task stream, one row per worker, each layer chain pinned to its worker. ``--pause``
keeps the cluster (and the dashboard) up for that many seconds after training. Writes
``timeline.html`` / ``timeline.png`` (dagtrain's own per-chain view of the run) and
``dask-report.html`` (Dask's performance report) into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distributed import Client, performance_report

import dagtrain as dt


def main() -> None:
    """Start a cluster, train on it, write what the run looked like."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--out", default="results/cluster")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to keep the dashboard up after training")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = dt.datasets.mnist()
    model = dt.MLP([784, 256, 256, 256, 10], activation="relu", loss="softmax_xent", seed=0)
    plan = dt.compile(model, data, dt.LayerLocal(k=args.k, data="sharded"), batch_size=128, epochs=args.epochs,
                      lr=0.05, momentum=0.9, max_steps=args.max_steps)
    print(plan.summary())
    # One thread per worker process: each layer chain gets a whole core and its own GIL.
    with dt.local_cluster(args.workers, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        with performance_report(filename=str(out / "dask-report.html")):
            result = plan.run(client)
        print(f"chains placed on workers: {result.info['placement']}")
        if args.pause:
            print(f"keeping the dashboard up for {args.pause:g} s", flush=True)
            time.sleep(args.pause)
    result.timeline(out / "timeline.html")
    result.timeline(out / "timeline.png")
    print(f"test accuracy {result.test_accuracy:.4f}, {result.samples_per_second:,.0f} samples/s on {result.scheduler}")
    print(f"wrote {out / 'timeline.html'}, {out / 'timeline.png'} and {out / 'dask-report.html'}")


if __name__ == "__main__":
    main()
