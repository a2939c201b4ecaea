"""Predict wall time before running: a cost model (flops -> seconds) and list scheduling of the fused tasks.

The cost model is two numbers: the flops per second one worker sustains on the model's
ops and a fixed overhead per task. Defaults come from measurements on the development
machine (notes/measurements.md: ~70 GFLOP/s on the MLP's matmuls, ~70 us per threaded
task); :func:`calibrate` measures them for a plan on this machine with a short run.

Three more terms describe what happens when workers run at once:

- ``latency``: the scheduler's hand-over, the time from a task's last input finishing to
  the task starting. Each edge of a chain pays it, so it counts per dependency, not per
  flop: on LayerLocal at k=10 each sync interval pays three in a row (lane, sync, lane).
  Dask's threaded scheduler routes every hand-over through its own thread (a worker
  reports, the scheduler thread wakes, takes the GIL and hands the next task out): a mean
  of 0.2-0.5 ms with a long tail on these 2-core machines.
- ``contention``: how much longer a task's math takes while another worker computes
  (shared caches, memory bandwidth, the GIL around the BLAS calls, and the scheduler
  thread's Python at each hand-over, which stalls the busy lanes). 1.0 is ideal.
- ``ready_order``: which ready task a free worker takes. ``"longest_path"`` is the best
  list schedule (longest remaining path first). ``"arbitrary"`` is what Dask's local
  schedulers do with LayerLocal's chains: ``dask.order`` ranks the symmetric chains of a
  window in an order that depends on string hashing, so a long chain often starts last
  and one worker idles at the sync. The prediction is then the mean over random orders.

:func:`measure_threaded` measures latency and contention, with the step's flops rate, on a synthetic Dask graph
shaped like a plan's lanes (:func:`lane_shape`) with the model's own step as the work, not
from the run it will predict; :meth:`dagtrain.Plan.measure_cost` does it for a plan.
:func:`measure_contention` measures contention alone, two threads running a step freely.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

import networkx as nx

from dagtrain.execute.trace import TaskRecord


@dataclass(frozen=True)
class CostModel:
    """Seconds a task takes: ``overhead + flops / flops_per_second`` (times ``contention`` beside other workers).

    ``latency``: seconds from a task's last input finishing to the task starting (0: the
    ideal scheduler; see :func:`measure_threaded`).
    """

    flops_per_second: float = 60e9
    overhead: float = 70e-6
    contention: float = 1.0
    latency: float = 0.0
    ready_order: Literal["longest_path", "arbitrary"] = "longest_path"
    orders: int = 16  # random orders averaged when ready_order is "arbitrary"

    def __post_init__(self) -> None:
        if not self.flops_per_second > 0 or not self.overhead >= 0:
            raise ValueError(f"CostModel needs flops_per_second > 0 and overhead >= 0, got {self.flops_per_second!r} "
                             f"and {self.overhead!r}")
        if not self.latency >= 0:
            raise ValueError(f"latency = {self.latency!r} must be >= 0 seconds (0: a task starts when its inputs are ready)")
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

    As Dask's local schedulers do: a task becomes ready ``cost.latency`` after its last
    input finishes, and a worker that is free takes a ready task at once (the worker free
    longest first). Among ready tasks the one with the longest remaining path goes first;
    with ``seed`` given, ready tasks go in a random order instead (one draw of what an
    order-blind scheduler does). Durations come from ``measured`` (seconds by task name)
    where given, else the cost model, whose ``contention`` stretches a task that starts
    while another worker is busy.
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
    pending = [(0.0, -rank[t], t) for t, n in waiting.items() if n == 0]  # (ready at, -rank, task)
    heapq.heapify(pending)
    ready: list[tuple[float, str]] = []  # (-rank, task), ready now
    idle = [(0.0, w) for w in range(workers)]  # (free since, worker)
    running: list[tuple[float, int, str]] = []  # (stop, worker, task)
    now = 0.0
    slots: list[Slot] = []
    while pending or ready or running:
        while pending and pending[0][0] <= now:
            _, neg_rank, t = heapq.heappop(pending)
            heapq.heappush(ready, (neg_rank, t))
        while ready and idle:
            _, t = heapq.heappop(ready)
            _, w = heapq.heappop(idle)
            stop = now + duration[t]
            if cost.contention > 1.0 and t not in (measured or {}) and any(s > now for s, _, _ in running):
                stop = now + cost.seconds(flops[t], concurrent=True)
            slots.append(Slot(t, w, now, stop))
            heapq.heappush(running, (stop, w, t))
        if pending and (not running or pending[0][0] < running[0][0]):
            now = pending[0][0]  # the next hand-over lands before any running task ends
            continue
        now, w, t = heapq.heappop(running)
        heapq.heappush(idle, (now, w))
        for s in tasks.successors(t):
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(pending, (now + cost.latency, -rank[s], s))
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


def measure_threaded(step: Callable[[], object] | None = None, *, workers: int = 2, steps_per_task: float = 2,
                     per_interval: int = 2, intervals: int = 40, rounds: int = 3, switch_interval: float = 0.001,
                     step_flops: float | None = None, blas_threads: int | None = 1, barrier: bool = False,
                     base: CostModel | None = None) -> CostModel:
    """``base`` with the contention and hand-over latency (and the flops rate) of lanes of ``step`` on Dask's threaded scheduler.

    Builds the shape LayerLocal's lanes take on a local scheduler: ``workers`` lanes of
    tasks, ``per_interval`` tasks per lane in each of ``intervals`` sync intervals, each task
    ``steps_per_task`` calls of ``step`` (a fraction: tasks alternate, so that the mean comes
    out right). An interval's first tasks wait for the last tasks of every lane before it,
    as lanes that run their own copy of the sync do (:func:`dagtrain.execute.lanes.sync_per_lane`);
    ``barrier=True`` puts a sync task between intervals instead. BLAS is pinned to ``blas_threads`` per thread while it
    measures, as a run pins it (1 by default; ``None`` leaves it as it is: two lanes of
    two-thread BLAS on two cores contend 1.3-1.7x). Pass one training step of the model and
    the plan's own granularity: each hand-over runs Python in
    the scheduler's thread, which stalls the busy lanes at their next GIL request, so
    small tasks stretch more (measured, 784-256x3-10 at batch 128: 6-17% at 2.5 steps per
    task, 0-9% at 25, over eight or nine runs each). Runs the graph ``rounds`` times on
    ``workers`` threads and on one, at the GIL switch interval the threaded scheduler runs
    at, noting in the worker threads when each task ran:

    - ``contention``: mean task time on ``workers`` threads / on one (median over rounds; at least 1);
    - ``latency``: mean gap from a task's last input stopping to the task starting, on
      ``workers`` threads (median over rounds). The mean, not the median gap: a run pays
      every hand-over on its critical path, and the gaps have a long tail;
    - ``flops_per_second``, if ``step_flops`` (the flops of one ``step``) is given: the rate
      the steps sustain on one thread in that graph (median over rounds). Otherwise ``base``'s.

    This measures the scheduler on this machine, not a run of a plan.
    """
    import dask.threaded
    from dask.task_spec import Task, TaskRef
    from threadpoolctl import threadpool_limits

    if intervals < 1 or per_interval < 1 or workers < 1:
        raise ValueError(f"intervals = {intervals}, per_interval = {per_interval} and workers = {workers} must all be >= 1")
    pinned = threadpool_limits(limits=blas_threads, user_api="blas") if blas_threads else contextlib.nullcontext()
    with pinned:
        ran: dict[str, tuple[float, float]] = {}
        work = step if step is not None else _matmuls(0.002)

        def task(name: str, steps: int, *inputs: object) -> int:
            start = time.perf_counter()
            for _ in range(steps):
                work()
            ran[name] = (start, time.perf_counter())
            return 0

        graph: dict[str, Task] = {}
        upstream: dict[str, list[str]] = {}
        last = [""] * workers
        before: list[str] = []  # what an interval's first tasks wait for: the sync task, or every lane's last task
        made = made_steps = 0
        for i in range(intervals):
            for lane in range(workers):
                for j in range(per_interval):
                    name = f"lane-{lane}-{i}-{j}"
                    steps = int((made + 1) * steps_per_task) - int(made * steps_per_task)
                    made += 1
                    made_steps += steps
                    upstream[name] = before if j == 0 else [last[lane]]
                    graph[name] = Task(name, task, name, steps, *(TaskRef(u) for u in upstream[name]))
                    last[lane] = name
            before = list(last)
            if barrier or i == intervals - 1:  # the window's last sync is a task either way
                end = f"sync-{i}"
                upstream[end] = list(last)
                graph[end] = Task(end, task, end, 0, *(TaskRef(u) for u in last))
                before = [end]
        work()  # warm-up: first-call costs are neither contention nor hand-overs
        stretch: list[float] = []
        gaps: list[float] = []
        rates: list[float] = []
        lane_tasks = sum(1 for name in graph if name.startswith("lane"))
        old = sys.getswitchinterval()
        sys.setswitchinterval(switch_interval)
        try:
            for _ in range(rounds):
                mean_task = {}
                for threads in (1, workers):
                    ran.clear()
                    dask.threaded.get(graph, [end], num_workers=threads)
                    mean_task[threads] = statistics.fmean(b - a for t, (a, b) in ran.items() if t.startswith("lane"))
                gaps.append(statistics.fmean(ran[t][0] - max(ran[u][1] for u in ups) for t, ups in upstream.items() if ups))
                stretch.append(mean_task[workers] / mean_task[1])
                if step_flops is not None:
                    rates.append(step_flops * made_steps / (mean_task[1] * lane_tasks))
        finally:
            sys.setswitchinterval(old)
        out = replace(base or CostModel(), contention=max(statistics.median(stretch), 1.0),
                      latency=max(statistics.median(gaps), 0.0))
        return replace(out, flops_per_second=statistics.median(rates)) if rates else out


def lane_shape(ops: nx.DiGraph, tasks: nx.DiGraph, workers: int) -> dict[str, float]:
    """The granularity of a window's chain tasks, as :func:`measure_threaded` takes it.

    ``ops`` is the window's op graph and ``tasks`` its fused task graph (``plan.graph(w,
    workers=W)`` and ``plan.task_graph(w, workers=W)``). Returns ``steps_per_task`` (the mean
    number of chain steps in a chain task: a lane's task holds several chains' steps),
    ``per_interval`` (chain tasks per worker between two syncs, rounded up) and
    ``intervals`` (syncs in the window, at least 1; a lane's copy of a sync is the same sync).
    """
    steps = []
    for _, d in tasks.nodes(data=True):
        chain_steps = {(ops.nodes[o]["chain"], ops.nodes[o]["step"]) for o in d.get("ops", ())
                       if ops.nodes[o].get("chain") is not None and ops.nodes[o].get("step") is not None}
        if chain_steps:
            steps.append(len(chain_steps))
    if not steps:
        raise ValueError("this task graph has no chain tasks (Sync has none): there are no lanes to measure")
    syncs = max(len({ops.nodes[o]["step"] for _, d in tasks.nodes(data=True) for o in d.get("ops", ())
                     if ops.nodes[o]["kind"] == "sync"}), 1)  # sync steps: a lane's copy of a sync is the same sync
    return {"steps_per_task": statistics.fmean(steps), "per_interval": -(-len(steps) // (syncs * workers)),
            "intervals": syncs}


def _matmuls(seconds: float) -> Callable[[], None]:
    """About ``seconds`` of float32 matmuls of a batch-128 layer's shape (BLAS, which releases the GIL)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, a = rng.standard_normal((128, 256), dtype=np.float32), rng.standard_normal((256, 256), dtype=np.float32)
    begin = time.perf_counter()
    for _ in range(50):
        np.dot(x, a)
    repeats = max(int(seconds / ((time.perf_counter() - begin) / 50)), 1)

    def matmuls() -> None:
        for _ in range(repeats):
            np.dot(x, a)

    return matmuls


def critical_seconds(tasks: nx.DiGraph, cost: CostModel, measured: dict[str, float] | None = None) -> float:
    """The longest path through the task graph in seconds (cost model, or ``measured`` task times where given).

    Each edge on the path adds the model's hand-over ``latency``.
    """
    longest: dict[str, float] = {}
    for t in nx.topological_sort(tasks):
        own = (measured or {}).get(t, cost.seconds(tasks.nodes[t].get("cost", 0.0)))
        longest[t] = own + max((longest[p] + cost.latency for p in tasks.predecessors(t)), default=0.0)
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
