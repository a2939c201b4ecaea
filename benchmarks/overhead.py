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

A cluster exists only while its own row runs: each round starts it, warms it with one
untimed run (worker start, imports, the workers' resident data) and closes it before the
next contender. An idle 2-worker LocalCluster burns about 10% of one core in timers and
heartbeats (measured with psutil over 10 s); alive beside the other rows it slowed the
threaded scheduler's two busy threads by 5-10% against the one-thread loop, which has a
spare core to absorb it.
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
        with threadpool_limits(1, "blas"):
            t = time.perf_counter()
            params = train_reference(model, data, **kw, arrays=arrays)
            for _ in range(args.epochs):  # the same evaluation work as the plan's one per epoch
                evaluate(model, params, data, "test")
            return samples / (time.perf_counter() - t)

    def dagtrain_on(scheduler: object) -> float:
        before_run(args.data, scheduler if not isinstance(scheduler, str) else None)
        return plan.run(scheduler).samples_per_second

    @contextlib.contextmanager
    def trimming_cluster() -> Iterator[Any]:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 65536}), \
                LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as c:
            yield c

    def on_cluster(start: Callable[[], contextlib.AbstractContextManager[Any]]) -> Callable[[], float]:
        def contender() -> float:
            with start() as cluster, Client(cluster) as client, warnings.catch_warnings():
                warnings.simplefilter("ignore", dt.PerformanceWarning)  # the point of the trimming row
                dagtrain_on(client)  # untimed: worker imports and resident data, as the other rows have theirs
                return dagtrain_on(client)
        return contender

    contenders = {"numpy loop": numpy_loop,
                  "dagtrain Sync, synchronous": lambda: dagtrain_on("sync"),
                  "dagtrain Sync, threaded": lambda: dagtrain_on("threads"),
                  "dagtrain Sync, dt.local_cluster 2 procs": on_cluster(lambda: dt.local_cluster(2)),
                  "dagtrain Sync, LocalCluster 2 procs, distributed's malloc trim": on_cluster(trimming_cluster)}
    for name in ("numpy loop", "dagtrain Sync, synchronous", "dagtrain Sync, threaded"):  # warm-up: imports, page cache
        contenders[name]()
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, f in contenders.items():
            results[name].append(f())
    base = results["numpy loop"]
    rows = [(name, v, [a / b for a, b in zip(v, base, strict=True)]) for name, v in results.items()]
    print(f"# Overhead: samples/s, {args.rounds} rounds, {args.epochs} epoch(s) each, data {args.data}\n")
    print(machine_line() + "\n")
    print(table(rows, "samples/s"))


if __name__ == "__main__":
    main()
