"""When and where each Dask task ran: a list of :class:`TaskRecord`, for analysis and timelines.

Local schedulers are traced with a dask callback (start and stop of every task, and the
worker thread); a ``distributed.Client`` with its task stream. Times are seconds since the
trace started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dask.callbacks import Callback


@dataclass(frozen=True)
class TaskRecord:
    """One task: its Dask key, when it started and stopped (s since the run began), and on which worker."""

    key: str
    start: float
    stop: float
    worker: str
    transfers: tuple[str, ...] = ()  # on a cluster: the workers its inputs were fetched from

    @property
    def prefix(self) -> str:
        """The task's name without its window suffix and numbers, e.g. ``chain2`` or ``sync``."""
        return self.key.split("-")[0]


class _LocalTrace(Callback):
    def __init__(self, t0: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.t0 = t0
        self.started: dict[str, float] = {}
        self.records: list[TaskRecord] = []
        self.lock = threading.Lock()

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        with self.lock:
            self.started[str(key)] = time.perf_counter() - self.t0

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        stop = time.perf_counter() - self.t0
        with self.lock:
            self.records.append(TaskRecord(str(key), self.started.pop(str(key), stop), stop, f"thread-{worker_id}"))


@contextmanager
def trace_local() -> Iterator[list[TaskRecord]]:
    """Record every task a local dask scheduler runs inside the block into the yielded list."""
    tracer = _LocalTrace(time.perf_counter())
    with tracer:
        yield tracer.records


@contextmanager
def trace_distributed(client: Any) -> Iterator[list[TaskRecord]]:
    """Record every task ``client``'s cluster runs inside the block (from its task stream) into the yielded list."""
    from distributed import get_task_stream

    records: list[TaskRecord] = []
    t0 = time.time()
    with get_task_stream(client) as stream:
        yield records
    for item in stream.data:
        compute = [s for s in item.get("startstops", ()) if s.get("action") == "compute"]
        if compute:
            worker = f"{item.get('worker', '?')}/{item.get('thread', '?')}"
            sources = tuple(s.get("source", "?") for s in item.get("startstops", ()) if s.get("action") == "transfer")
            records.append(TaskRecord(str(item["key"]), compute[0]["start"] - t0, compute[0]["stop"] - t0, worker,
                                      sources))
    records.sort(key=lambda r: r.start)
