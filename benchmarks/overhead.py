"""What the graph costs: samples/s of the plain numpy loop vs dagtrain Sync on Dask schedulers.

    python -m benchmarks.overhead [--rounds 5] [--epochs 1] [--data warm|cold]

Every contender trains 784-256-256-10 relu on real MNIST (batch 128, lr 0.05, momentum
0.9) for the same epochs and evaluates the test set once per epoch. The numpy loop reads
the training set into memory first (untimed). With ``--data warm`` (the default) dagtrain
finds the split in memory too, as every epoch after a process's first does; with
``--data cold`` it reads its chunks from zarr inside every timed run, as a first epoch
does. Contenders run interleaved, round by round, and each ratio is taken within one round.
The two cluster rows are 2-process LocalClusters: one from ``dt.local_cluster`` and one with
distributed's default ``MALLOC_TRIM_THRESHOLD_`` (see ``dagtrain.execute.cluster``).

The rounds run in phases, one per background: first the local contenders with no cluster
alive, then each cluster's row while that cluster (and only it) is alive. Every phase
interleaves its rows with the numpy loop, and a row's ratio is to the loop of its own round,
so each ratio compares two runs on the same background. An idle 2-worker LocalCluster burns
about 10% of one core in timers and heartbeats (psutil, 10 s); kept alive beside the threaded
row it cost that row 5-10% against the one-thread loop, which has a spare core to absorb it.
A cluster lives through all of its phase's rounds: started afresh for each round, its runs
were about 30% slower than a long-lived cluster's, even after two untimed runs.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dask
from threadpoolctl import threadpool_limits

import dagtrain as dt
from benchmarks.common import add_data_option, before_run, machine_line, table
from dagtrain.execute.ops import evaluate
from dagtrain.model import kernels
from dagtrain.reference import train_reference


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    add_data_option(parser)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    data = dt.datasets.mnist()
    arrays = data.read_split("train")
    model = dt.MLP([784, 256, 256, 10], seed=0)
    kw = {"batch_size": 128, "epochs": args.epochs, "lr": 0.05, "momentum": 0.9}
    plan = dt.compile(model, data, **kw)
    samples = args.epochs * data.size("train")

    def numpy_loop() -> float:
        with threadpool_limits(1, "blas"), kernels.using("numpy"):  # the plain numpy loop, without dagtrain's kernels
            t = time.perf_counter()
            params = train_reference(model, data, **kw, arrays=arrays)
            for _ in range(args.epochs):  # the same evaluation work as the plan's one per epoch
                evaluate(model, params, data, "test")
            return samples / (time.perf_counter() - t)

    def dagtrain_on(scheduler: object) -> float:
        before_run(args.data, scheduler if not isinstance(scheduler, str) else None)
        return plan.run(scheduler).samples_per_second

    @contextlib.contextmanager
    def no_cluster() -> Iterator[None]:
        yield None

    @contextlib.contextmanager
    def on_cluster(trimming: bool) -> Iterator[Any]:
        environ = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 65536} if trimming else {}
        with dask.config.set(environ), \
                (LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
                 if trimming else dt.local_cluster(2)) as cluster, Client(cluster) as client, warnings.catch_warnings():
            warnings.simplefilter("ignore", dt.PerformanceWarning)  # the point of the trimming row
            yield client

    phases: list[tuple[Callable[[], contextlib.AbstractContextManager[Any]], dict[str, Callable[[Any], float]]]] = [
        (no_cluster, {"dagtrain Sync, synchronous": lambda _: dagtrain_on("sync"),
                      "dagtrain Sync, threaded": lambda _: dagtrain_on("threads")}),
        (lambda: on_cluster(False), {"dagtrain Sync, dt.local_cluster 2 procs": dagtrain_on}),
        (lambda: on_cluster(True), {"dagtrain Sync, LocalCluster 2 procs, distributed's malloc trim": dagtrain_on}),
    ]
    rows: list[tuple[str, list[float], list[float]]] = []
    for start, contenders in phases:
        with start() as client:
            numpy_loop()  # warm-up: imports, page cache, worker start, the workers' resident data
            for f in contenders.values():
                f(client)
            loop: list[float] = []
            results: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                loop.append(numpy_loop())
                for name, f in contenders.items():
                    results[name].append(f(client))
        if not rows:
            rows.append(("numpy loop", loop, [1.0] * len(loop)))
        rows += [(name, v, [a / b for a, b in zip(v, loop, strict=True)]) for name, v in results.items()]
    print(f"# Overhead: samples/s, {args.rounds} rounds, {args.epochs} epoch(s) each, data {args.data}\n")
    print(machine_line() + "\n")
    print(table(rows, "samples/s"))
    print("\nEach ratio is to the numpy loop of its own round, run on the same background (no cluster, or that "
          "row's cluster alone).")


if __name__ == "__main__":
    main()
