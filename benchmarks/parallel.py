"""LayerLocal on 1 and 2 workers against the numpy loop and Sync, with the seed's formula and the cost model.

    python -m benchmarks.parallel [--rounds 3] [--intervals 1,10,100] [--modes sharded,shared] [--data warm|cold]
                                  [--plot docs/performance-parallel.png]

784-256-256-256-10 relu, batch 128, lr 0.05, one epoch of real MNIST, then one evaluation of the
test set (the numpy loop evaluates too, as every plan does at an epoch's end). One worker is the
synchronous scheduler, two workers the threaded scheduler with two threads (BLAS on one
thread each). Each figure is a median over rounds; each ratio is taken within a round,
against that round's numpy loop and that round's Sync on one worker. ``--data warm`` (the
default): dagtrain's runs find the training split in memory, as the loop has its arrays
and as every epoch after a process's first does; ``--data cold``: every run reads its
chunks from zarr inside the timed run. Each round also times the one-core float32 peak
(2048^3 matmul, 1 BLAS thread), and the last column divides the chain tasks' GFLOP/s by it.

"formula" is the seed's predicted speed-up over Sync, ``T_seq / (T_seq / min(L, W) + syncs * t_sync)``
with ``T_seq`` this round's Sync time and ``t_sync`` the run's measured sync gaps; "cost
model" is ``plan.analyze(workers=W).predicted_seconds``, fixed before anything runs: "ideal"
with the default CostModel (no contention, no hand-over, longest path first); "as run" with
``plan.measure_cost(workers=2)``: what ``measure_threaded`` measures on Dask's threaded
scheduler running lanes of the model's own steps, shaped as each schedule's lanes (steps per
task, tasks per sync interval; ``lane_shape``): the step's flops rate on one thread, and on
two workers the contention and the mean hand-over latency; ready tasks go in arbitrary
order, as Dask's local schedulers take them. Those are micro-benchmarks, not these runs; Sync
takes its contention from ``measure_contention`` on the step. One worker is the synchronous
scheduler: no contention, no hand-over term. On 2 workers the chains run as 2 lanes
(``pack_lanes``), so both orders predict about the same. "calibrated" is the as-run model
with its flops/s and task overhead fitted (``calibrate``) to the same round's 1-worker run
of the same schedule, and its contention and hand-over measured again just before the
2-worker run: it asks how well the model predicts 2 workers from 1 on the machine as it is
in that round (these shared 2-core machines drift by 2x over an hour, which a fixed flops/s
cannot follow).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

import dagtrain as dt
from benchmarks.common import add_data_option, before_run, machine_line
from benchmarks.kernels import gflops
from dagtrain.analysis.predict import CostModel, calibrate
from dagtrain.data.atomic import atomic_write
from dagtrain.execute.ops import evaluate
from dagtrain.experiments.sweep import sync_gaps
from dagtrain.model import kernels
from dagtrain.reference import train_reference

Row = tuple[float, float, float, float, float, float, float]  # wall s; speed-ups: loop, Sync-1, formula; GFLOP/s;
# / calibrated; chain GFLOP/s / the round's one-core peak


def main() -> None:
    """Run the rounds, print the table and draw the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intervals", default="1,10,100")
    parser.add_argument("--modes", default="sharded,shared", help="LayerLocal data modes to run")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of samples/s per contender here")
    add_data_option(parser)
    args = parser.parse_args()
    data = dt.datasets.mnist()
    arrays = data.read_split("train")
    model = dt.MLP([784, 256, 256, 256, 10], seed=0)
    kw: dict[str, Any] = {"batch_size": 128, "epochs": 1, "lr": 0.05}
    sync = dt.compile(model, data, **kw)
    runs: list[tuple[dt.Schedule, int]] = [(dt.Sync(), 2)]
    runs += [(dt.LayerLocal(int(k), mode), workers) for mode in ("sharded", "shared")
             for k in args.intervals.split(",") for workers in (1, 2)]
    runs = [(s, w) for s, w in runs if not isinstance(s, dt.LayerLocal) or s.data in args.modes.split(",")]
    plans = {s: dt.compile(model, data, s, **kw) for s, _ in runs}
    threaded = {s: plans[s].measure_cost(workers=2) for s in plans}  # flops rate, contention, hand-over; before any run

    def as_run(s: dt.Schedule, workers: int) -> CostModel:
        """The as-run model of ``s`` on ``workers``: one worker is the synchronous scheduler (nothing beside it)."""
        return threaded[s] if workers > 1 else replace(threaded[s], contention=1.0, latency=0.0)

    predicted = {(s, w): plans[s].analyze(workers=w).predicted_seconds for s, w in runs}
    predicted[(dt.Sync(), 1)] = sync.analyze(workers=1).predicted_seconds
    predicted_as_run = {(s, w): plans[s].analyze(workers=w, cost=as_run(s, w)).predicted_seconds for s, w in runs}
    predicted_as_run[(dt.Sync(), 1)] = predicted[(dt.Sync(), 1)]
    rows: dict[tuple[dt.Schedule, int], list[Row]] = {(dt.Sync(), 1): [], **{r: [] for r in runs}}
    loop: list[float] = []
    peaks: list[float] = []

    def numpy_loop() -> float:
        t = time.perf_counter()
        with kernels.using("numpy"):  # the plain numpy loop, without dagtrain's kernels
            params = train_reference(model, data, **kw, arrays=arrays)
        with threadpool_limits(limits=1, user_api="blas"), kernels.using("numpy"):  # one core, as the loop trains
            evaluate(model, params, data, "test")  # the same evaluation work as the plan's, at the epoch's end
        return time.perf_counter() - t

    def run(plan: dt.Plan, workers: int) -> dt.TrainResult:
        before_run(args.data)
        return plan.run("sync" if workers == 1 else "threads")

    def chain_gflops(plan: dt.Plan, result: dt.TrainResult) -> float:
        """Sustained GFLOP/s of one worker inside the fused chain tasks (their loads and glue included).

        On one worker a task is one chain's segment (``chain2-3``); on two, one lane's share of
        an interval (``lane0-3``: its chains one after another, its copies of the sync first).
        """
        flops = sum(sum(plan.chain_costs(w).values()) for w in range(len(plan.windows)))
        seconds = sum(r.stop - r.start for r in result.tasks if r.prefix.startswith(("chain", "lane")))
        return flops / seconds / 1e9 if seconds else float("nan")

    numpy_loop(), run(sync, 1)  # warm-up
    for _ in range(args.rounds):
        t_loop = numpy_loop()
        t_seq = run(sync, 1).wall_time
        loop.append(t_loop)
        rows[(dt.Sync(), 1)].append((t_seq, t_loop / t_seq, 1.0, 1.0, float("nan"), float("nan"), float("nan")))
        with threadpool_limits(limits=1, user_api="blas"):
            peak = statistics.median(gflops(2048, 2048, 2048, 3))  # this round's one-core ceiling
        peaks.append(peak)
        fitted: dict[dt.Schedule, CostModel] = {}
        for s, workers in runs:
            lanes_now = plans[s].measure_cost(workers=2) if workers > 1 and isinstance(s, dt.LayerLocal) else threaded[s]
            result = run(plans[s], workers)
            if workers == 1:  # the same round's one-worker run of this schedule calibrates the model
                fit = calibrate(plans[s].task_graph(0), result.tasks)
                fitted[s] = CostModel(flops_per_second=fit.flops_per_second, overhead=fit.overhead)
            calibrated = float("nan")
            if s in fitted:
                cost = replace(fitted[s], ready_order="arbitrary")
                if workers > 1:  # and the lanes' contention and hand-over measured just before this run
                    cost = replace(cost, contention=lanes_now.contention, latency=lanes_now.latency)
                calibrated = plans[s].analyze(workers=workers, cost=cost).predicted_seconds
            gaps = sync_gaps(result.tasks)
            syncs = len(result.info["sync_steps"])  # on two workers each lane runs its own copy of a sync, in its task
            chains = model.n_layers if isinstance(s, dt.LayerLocal) else 1
            formula = t_seq / min(chains, workers) + syncs * (statistics.mean(gaps) if gaps else 0.0)
            rate = chain_gflops(plans[s], result)
            rows[(s, workers)].append((result.wall_time, t_loop / result.wall_time, t_seq / result.wall_time, t_seq / formula,
                                       rate, result.wall_time / calibrated, rate / peak))
    samples = data.size("train")
    print(f"# Parallel speed-up, {args.rounds} rounds, data {args.data}\n\n{machine_line()}\n")
    print(f"one-core float32 peak (2048^3, measured in each round): median {statistics.median(peaks):.1f} GFLOP/s "
          f"({min(peaks):.1f}-{max(peaks):.1f})")
    print(f"numpy loop (1 core): median {samples / statistics.median(loop):,.0f} samples/s; "
          "the threaded scheduler on two workers (measure_threaded, lanes of one training step):\n")
    for s, cost in threaded.items():
        print(f"- {s}: {cost.flops_per_second / 1e9:.1f} GFLOP/s on one thread, contention {cost.contention:.3f}, "
              f"hand-over {cost.latency * 1e6:.0f} us")
    print()
    print("| schedule | workers | median samples/s (min-max) | speed-up over numpy loop | over Sync, 1 worker | "
          "seed's formula | cost model (ideal) s | measured / ideal | cost model (as run) s | measured / as run | "
          "measured / calibrated | chain GFLOP/s per worker | of the round's one-core peak (min-max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    medians: dict[str, float] = {"numpy loop, 1": samples / statistics.median(loop)}
    for (s, workers), values in rows.items():
        wall = statistics.median(v[0] for v in values)
        medians[f"{s}, {workers}"] = samples / wall
        spread = f"{samples / max(v[0] for v in values):,.0f}-{samples / min(v[0] for v in values):,.0f}"
        shares = [100 * v[6] for v in values]
        share = "-" if any(x != x for x in shares) else \
            f"{statistics.median(shares):.0f}% ({min(shares):.0f}-{max(shares):.0f}%)"
        print(f"| {s} | {workers} | {samples / wall:,.0f} ({spread}) | {statistics.median(v[1] for v in values):.2f}x | "
              f"{statistics.median(v[2] for v in values):.2f}x | {statistics.median(v[3] for v in values):.2f}x | "
              f"{predicted[(s, workers)]:.3f} | {wall / predicted[(s, workers)]:.2f} | "
              f"{predicted_as_run[(s, workers)]:.3f} | {wall / predicted_as_run[(s, workers)]:.2f} | "
              f"{statistics.median(v[5] for v in values):.2f} | "
              f"{statistics.median(v[4] for v in values):.1f} | {share} |"
              .replace("nan%", "-").replace("nan", "-"), flush=True)
    if args.plot is not None:
        plot(medians, args.plot)
        print(f"\nplot: {args.plot}")


def plot(medians: dict[str, float], path: Path) -> None:
    """Horizontal bars of median samples/s, one per contender and worker count, the loop as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(medians)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    colors = ["0.5" if n.startswith(("numpy", "Sync")) else "tab:blue" if n.endswith(", 2") else "tab:cyan" for n in names]
    ax.barh(range(len(names)), [medians[n] for n in names], color=colors)
    ax.axvline(medians["numpy loop, 1"], color="k", lw=0.8, ls="--")
    labels = [n.replace("LayerLocal", "LL").replace(", data=", " ").replace(", 1", ", 1 worker").replace(", 2", ", 2 workers")
              for n in names]
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("samples/s (median; dashed: numpy loop on 1 core)")
    ax.set_title("784-256x3-10, batch 128, one MNIST epoch, 2-core machine")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    atomic_write(path, buffer.getvalue())
    plt.close(fig)


if __name__ == "__main__":
    main()
