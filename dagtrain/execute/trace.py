"""When and where each Dask task ran: a list of :class:`TaskRecord`, for analysis and timelines.

Local schedulers are traced with a dask callback (which worker thread ran each task) and
:func:`timed`, which notes when each task's function ran in its worker thread: the callback
itself fires in the scheduler's thread, when the task is handed out and when its result is
taken back, so its times would add the scheduler's latency (6% of a chain task on two
threads, measured). A ``distributed.Client`` is traced with its task stream, whose compute
times come from the workers. Times are seconds since the trace started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
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


# When each task's function ran (perf_counter at start and stop), by key: filled by `timed` while a
# local trace is active in this process, emptied by that trace. Elsewhere (a distributed worker, a
# processes-scheduler child) nothing is recorded, so nothing accumulates.
_RAN: dict[str, tuple[float, float]] = {}
_ACTIVE: list[_LocalTrace] = []


def timed(key: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; while a local trace is active in this process, note when the call ran, under ``key``."""
    if not _ACTIVE:
        return fn(*args)
    start = time.perf_counter()
    try:
        return fn(*args)
    finally:
        _RAN[key] = (start, time.perf_counter())


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
        taken = time.perf_counter() - self.t0
        with self.lock:
            handed = self.started.pop(str(key), taken)
            ran = _RAN.pop(str(key), None)  # None: the task ran in another process (or was not wrapped)
            start, stop = (handed, taken) if ran is None else (ran[0] - self.t0, ran[1] - self.t0)
            self.records.append(TaskRecord(str(key), start, stop, f"thread-{worker_id}"))


@contextmanager
def trace_local() -> Iterator[list[TaskRecord]]:
    """Record every task a local dask scheduler runs inside the block into the yielded list.

    A task lowered through :func:`timed` gets the times its function ran in the worker;
    any other gets the times the scheduler handed it out and took its result back.
    """
    tracer = _LocalTrace(time.perf_counter())
    _ACTIVE.append(tracer)
    try:
        with tracer:
            yield tracer.records
    finally:
        _ACTIVE.remove(tracer)
        if not _ACTIVE:
            _RAN.clear()


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
