"""Compile cost as graphs grow: seconds per 10^5 nodes at 10^4, 10^5 and 10^6 nodes, and a whole epoch at batch 1.

    python -m benchmarks.scale [--max-nodes 1000000]

For each size, one window of LayerLocal(k=10, "shared") on a 4-layer MLP (784-100-100-100-10,
batch 1) is built through every pass (each validated), analysed (work, critical path,
width), fused into tasks and compiled into programs; the table gives seconds per 10^5
nodes for each stage, so a quadratic step shows as a growing column. Then the whole
first epoch of MNIST at batch 1 (50,000 steps) is compiled and analysed window by window,
with its peak memory. Last, memory over training: Sync and LayerLocal(10, sharded) train
784-256-256-10 for ``--epochs`` epochs on the threaded scheduler, and the process's
resident memory is read at every epoch end; flat means nothing accumulates.
"""

from __future__ import annotations

import argparse
import resource
import time

import dagtrain as dt
from benchmarks.common import machine_line
from dagtrain.analysis.summary import analyze
from dagtrain.execute.fuse import fuse
from dagtrain.execute.program import compile_program
from dagtrain.graph.window import Window

MODEL = dt.MLP([784, 100, 100, 100, 10], seed=0)
SCHEDULE = dt.LayerLocal(10, "shared")
NODES_PER_STEP = 39  # 4 loads, 16 forwards, 4 losses, 10 backwards, 4 updates, a tenth of a sync


def stage_times(n_steps: int) -> tuple[int, list[float]]:
    """Nodes of one n-step window, and seconds to build+validate, analyse, fuse, compile it."""
    window = Window(0, 0, 0, 0, n_steps, evaluate=True)
    t0 = time.perf_counter()
    g = SCHEDULE.build(MODEL, window, batch_size=1)
    t1 = time.perf_counter()
    analyze(g)
    t2 = time.perf_counter()
    tasks = fuse(g, 0, SCHEDULE.k)
    t3 = time.perf_counter()
    compile_program(g, tasks, 0)
    t4 = time.perf_counter()
    return g.number_of_nodes(), [t1 - t0, t2 - t1, t3 - t2, t4 - t3]


def main() -> None:
    """Print the per-node cost table and the whole-epoch figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-nodes", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    print(f"# Compile cost per node\n\n{machine_line()}\n")
    print("| nodes | build + validate (s per 10^5 nodes) | analyse | fuse | compile programs | total s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for target in (10_000, 100_000, 1_000_000):
        if target > args.max_nodes:
            break
        nodes, times = stage_times(max(10, round(target / NODES_PER_STEP / 10) * 10))
        per = [f"{t / nodes * 1e5:.2f}" for t in times]
        print(f"| {nodes:,} | {' | '.join(per)} | {sum(times):.1f} |", flush=True)
    data = dt.datasets.mnist()
    plan = dt.compile(MODEL, data, SCHEDULE, batch_size=1, epochs=1)
    t = time.perf_counter()
    analysis = plan.analyze(workers=2)
    seconds = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nWhole epoch at batch 1: {plan.total_steps:,} steps in {len(plan.windows)} windows of "
          f"{plan.window_steps} steps, analysed per window shape in {seconds:.1f} s "
          f"({analysis.work_flops / 1e9:.1f} GFLOP of work, {analysis.syncs:,} syncs); "
          f"peak memory of this process {peak_mb:,.0f} MB")
    print(f"\n## Resident memory at each epoch end, MB ({args.epochs} epochs, threaded scheduler)\n")
    print("| schedule | " + " | ".join(f"epoch {e}" for e in range(1, args.epochs + 1)) + " | last / first |")
    print("|---|" + "---:|" * (args.epochs + 1))
    model = dt.MLP([784, 256, 256, 10], seed=0)
    for schedule in (dt.Sync(), dt.LayerLocal(10, "sharded")):
        trained = dt.compile(model, data, schedule, batch_size=128, epochs=args.epochs, lr=0.05)
        per_epoch = trained.total_steps // args.epochs
        rss: list[float] = []

        def record(done: int, total: int, info: dict[str, object], rss: list[float] = rss, every: int = per_epoch) -> None:
            if done % every == 0:
                rss.append(resident_mb())

        trained.run("threads", progress=record)
        print(f"| {schedule} | " + " | ".join(f"{m:,.0f}" for m in rss) + f" | {rss[-1] / rss[0]:.2f} |", flush=True)


def resident_mb() -> float:
    """This process's resident memory now (not its peak), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


if __name__ == "__main__":
    main()
