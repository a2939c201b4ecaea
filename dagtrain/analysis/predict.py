"""Predict wall time before running: a cost model (flops -> seconds) and list scheduling of the fused tasks.

The cost model is two numbers: the flops per second one worker sustains on the model's
ops and a fixed overhead per task. Defaults come from measurements on the development
machine (notes/measurements.md: ~70 GFLOP/s on the MLP's matmuls, ~70 us per threaded
task); :func:`calibrate` measures them for a plan on this machine with a short run.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from dagtrain.execute.trace import TaskRecord


@dataclass(frozen=True)
class CostModel:
    """Seconds a task takes: ``overhead + flops / flops_per_second``."""

    flops_per_second: float = 60e9
    overhead: float = 70e-6

    def seconds(self, flops: float) -> float:
        """Predicted duration of a task of ``flops`` floating-point operations."""
        return self.overhead + flops / self.flops_per_second


@dataclass(frozen=True)
class Slot:
    """One task in a predicted schedule: which worker, when."""

    task: str
    worker: int
    start: float
    stop: float


def list_schedule(tasks: nx.DiGraph, workers: int, cost: CostModel,
                  measured: dict[str, float] | None = None) -> list[Slot]:
    """Greedy list scheduling of a task graph on ``workers`` identical workers.

    A ready task with the longest remaining path goes first, to the worker free soonest.
    Durations come from ``measured`` (seconds by task name) where given, else the cost model.
    """
    duration = {t: (measured or {}).get(t, cost.seconds(d.get("cost", 0.0))) for t, d in tasks.nodes(data=True)}
    rank: dict[str, float] = {}
    for t in reversed(list(nx.topological_sort(tasks))):
        rank[t] = duration[t] + max((rank[s] for s in tasks.successors(t)), default=0.0)
    waiting = {t: tasks.in_degree(t) for t in tasks}
    earliest = dict.fromkeys(tasks, 0.0)
    ready = [(-rank[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    free = [(0.0, w) for w in range(workers)]
    slots: list[Slot] = []
    while ready:
        _, t = heapq.heappop(ready)
        at, w = heapq.heappop(free)
        start = max(at, earliest[t])
        stop = start + duration[t]
        slots.append(Slot(t, w, start, stop))
        heapq.heappush(free, (stop, w))
        for s in tasks.successors(t):
            earliest[s] = max(earliest[s], stop)
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(ready, (-rank[s], s))
    return slots


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
