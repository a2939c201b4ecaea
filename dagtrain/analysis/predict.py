"""Predict wall time before running: a cost model (flops -> seconds) and list scheduling of the fused tasks.

The cost model is two numbers: the flops per second one worker sustains on the model's
ops and a fixed overhead per task. Defaults come from measurements on the development
machine (notes/measurements.md: ~70 GFLOP/s on the MLP's matmuls, ~70 us per threaded
task); :func:`calibrate` measures them for a plan on this machine with a short run.

Two more terms describe what happens when workers run at once:

- ``contention``: how much longer a task's math takes while another worker computes
  (shared caches, memory bandwidth, the GIL around the BLAS calls). 1.0 is ideal;
  :func:`measure_contention` measures it with a micro-benchmark of the model's own
  training step in one and in two threads, not from the run it will predict.
- ``ready_order``: which ready task a free worker takes. ``"longest_path"`` is the best
  list schedule (longest remaining path first). ``"arbitrary"`` is what Dask's local
  schedulers do with LayerLocal's chains: ``dask.order`` ranks the symmetric chains of a
  window in an order that depends on string hashing, so a long chain often starts last
  and one worker idles at the sync. The prediction is then the mean over random orders.
"""

from __future__ import annotations

import heapq
import random
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import networkx as nx

from dagtrain.execute.trace import TaskRecord


@dataclass(frozen=True)
class CostModel:
    """Seconds a task takes: ``overhead + flops / flops_per_second`` (times ``contention`` beside other workers)."""

    flops_per_second: float = 60e9
    overhead: float = 70e-6
    contention: float = 1.0
    ready_order: Literal["longest_path", "arbitrary"] = "longest_path"
    orders: int = 16  # random orders averaged when ready_order is "arbitrary"

    def __post_init__(self) -> None:
        if not self.flops_per_second > 0 or not self.overhead >= 0:
            raise ValueError(f"CostModel needs flops_per_second > 0 and overhead >= 0, got {self.flops_per_second!r} "
                             f"and {self.overhead!r}")
        if not self.contention >= 1.0:
            raise ValueError(f"contention = {self.contention!r} must be >= 1.0 (1.0: workers do not slow each other)")
        if self.ready_order not in ("longest_path", "arbitrary"):
            raise ValueError(f"ready_order = {self.ready_order!r}; choose 'longest_path' or 'arbitrary'")

    def seconds(self, flops: float, *, concurrent: bool = False) -> float:
        """Predicted duration of a task of ``flops`` floating-point operations (``concurrent``: beside another busy worker)."""
        return self.overhead + flops / self.flops_per_second * (self.contention if concurrent else 1.0)


@dataclass(frozen=True)
class Slot:
    """One task in a predicted schedule: which worker, when."""

    task: str
    worker: int
    start: float
    stop: float


def list_schedule(tasks: nx.DiGraph, workers: int, cost: CostModel,
                  measured: dict[str, float] | None = None, *, seed: int | None = None) -> list[Slot]:
    """Greedy list scheduling of a task graph on ``workers`` identical workers, simulated in time.

    As Dask's local schedulers do: a task becomes ready when its last input finishes, and a
    worker that is free takes a ready task at once (the worker free longest first). Among
    ready tasks the one with the longest remaining path goes first; with ``seed`` given,
    ready tasks go in a random order instead (one draw of what an order-blind scheduler
    does). Durations come from ``measured`` (seconds by task name) where given, else the
    cost model, whose ``contention`` stretches a task that starts while another worker is busy.
    """
    flops = {t: d.get("cost", 0.0) for t, d in tasks.nodes(data=True)}
    duration = {t: (measured or {}).get(t, cost.seconds(f)) for t, f in flops.items()}
    rank: dict[str, float] = {}
    if seed is None:
        for t in reversed(list(nx.topological_sort(tasks))):
            rank[t] = duration[t] + max((rank[s] for s in tasks.successors(t)), default=0.0)
    else:
        draw = random.Random(seed)
        rank = {t: draw.random() for t in sorted(tasks)}
    waiting = {t: tasks.in_degree(t) for t in tasks}
    ready = [(-rank[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    idle = [(0.0, w) for w in range(workers)]  # (free since, worker)
    running: list[tuple[float, int, str]] = []  # (stop, worker, task)
    now = 0.0
    slots: list[Slot] = []
    while ready or running:
        while ready and idle:
            _, t = heapq.heappop(ready)
            _, w = heapq.heappop(idle)
            stop = now + duration[t]
            if cost.contention > 1.0 and t not in (measured or {}) and any(s > now for s, _, _ in running):
                stop = now + cost.seconds(flops[t], concurrent=True)
            slots.append(Slot(t, w, now, stop))
            heapq.heappush(running, (stop, w, t))
        now, w, t = heapq.heappop(running)
        heapq.heappush(idle, (now, w))
        for s in tasks.successors(t):
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(ready, (-rank[s], s))
    return slots


def predicted_makespan(tasks: nx.DiGraph, workers: int, cost: CostModel,
                       measured: dict[str, float] | None = None) -> float:
    """Predicted wall time of ``tasks`` on ``workers`` workers under ``cost.ready_order`` (a mean over orders if arbitrary)."""
    if cost.ready_order == "longest_path" or workers == 1:
        return makespan(list_schedule(tasks, workers, cost, measured))
    return statistics.fmean(makespan(list_schedule(tasks, workers, cost, measured, seed=i)) for i in range(cost.orders))


def measure_contention(step: Callable[[], object], *, seconds: float = 1.0, rounds: int = 5,
                       switch_interval: float = 0.001) -> float:
    """How much slower ``step`` runs when two threads run it at once: the median over rounds of (2-thread time / 1-thread time).

    ``step`` should be one training step of the model (BLAS calls that release the GIL and
    the Python glue between them), with BLAS pinned as the run will pin it. Each round runs
    about ``seconds`` of steps alone, then the same steps in each of two threads, with the
    GIL switch interval the threaded scheduler uses (``switch_interval``). A value below 1
    (noise) is reported as 1. On a 2-core machine rounds vary by about 10%: use the median.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    try:
        step()  # warm-up: first-call costs are not contention
        start = time.perf_counter()
        step()
        per_round = max(int(seconds / max(time.perf_counter() - start, 1e-6)), 1)

        def timed(threads: int) -> float:
            workers = [threading.Thread(target=lambda: [step() for _ in range(per_round)]) for _ in range(threads)]
            begin = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return time.perf_counter() - begin

        ratios = []
        for _ in range(rounds):
            alone = timed(1)
            ratios.append(timed(2) / alone)
    finally:
        sys.setswitchinterval(old)
    return max(statistics.median(ratios), 1.0)


def critical_seconds(tasks: nx.DiGraph, cost: CostModel, measured: dict[str, float] | None = None) -> float:
    """The longest path through the task graph in seconds (cost model, or ``measured`` task times where given)."""
    longest: dict[str, float] = {}
    for t in nx.topological_sort(tasks):
        own = (measured or {}).get(t, cost.seconds(tasks.nodes[t].get("cost", 0.0)))
        longest[t] = own + max((longest[p] for p in tasks.predecessors(t)), default=0.0)
    return max(longest.values(), default=0.0)


def makespan(slots: Iterable[Slot]) -> float:
    """When the last task of a schedule finishes."""
    return max((s.stop for s in slots), default=0.0)


def measured_durations(records: Iterable[TaskRecord], window: int) -> dict[str, float]:
    """Seconds each task of window ``window`` took in a run, by task name (``train-3``)."""
    out = {}
    for r in records:
        m = re.fullmatch(r"(.+?)-w(\d+)(?:-r\d+)?", r.key)
        if m and int(m.group(2)) == window:
            out[m.group(1)] = r.stop - r.start
    return out


def calibrate(tasks: nx.DiGraph, records: Iterable[TaskRecord], window: int = 0) -> CostModel:
    """Fit the cost model to a run: flops per second over the training tasks, overhead from the smallest tasks."""
    durations = measured_durations(records, window)
    train = [(tasks.nodes[t]["cost"], s) for t, s in durations.items()
             if t in tasks and tasks.nodes[t].get("cost", 0.0) > 0 and t.startswith(("train", "chain"))]
    light = sorted(s for t, s in durations.items() if t in tasks and tasks.nodes[t].get("cost", 0.0) == 0)
    overhead = light[len(light) // 2] if light else CostModel.overhead
    if not train:
        return CostModel(overhead=overhead)
    flops, seconds = sum(f for f, _ in train), sum(s for _, s in train)
    return CostModel(flops_per_second=flops / max(seconds - overhead * len(train), 1e-9), overhead=overhead)
