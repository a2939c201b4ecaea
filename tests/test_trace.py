"""Task records on the local schedulers: the times a task's function ran, not when the scheduler saw it."""

from __future__ import annotations

import time
from typing import Any

import dask.threaded
from dask.callbacks import Callback
from dask.task_spec import Task, TaskRef

from dagtrain.execute import trace
from dagtrain.execute.trace import timed, trace_local


def nap(seconds: float, *_: Any) -> float:
    time.sleep(seconds)
    return seconds


class DawdlingScheduler(Callback):
    """The scheduler's thread takes 0.08 s to hand out each task and 0.08 s over each result, as a busy one does.

    Dask keeps its callbacks in a set, so whether this runs before or after the trace's own is
    arbitrary; but it is the same order at hand-out and at take-back, so a trace that timed tasks
    from the scheduler's thread would count exactly one of the two delays, whichever the order.
    """

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        time.sleep(DAWDLE)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        time.sleep(DAWDLE)


DAWDLE = 0.08


def test_records_hold_when_the_task_ran_in_its_worker() -> None:
    dsk = {"a": Task("a", timed, "a", nap, 0.02),
           "b": Task("b", timed, "b", nap, 0.02, TaskRef("a")),
           "plain": Task("plain", nap, 0.02)}
    with DawdlingScheduler(), trace_local() as records:
        dask.threaded.get(dsk, ["b", "plain"], num_workers=2)
    by_key = {r.key: r for r in records}
    assert set(by_key) == {"a", "b", "plain"}
    for key in ("a", "b"):  # the worker's own times: the scheduler's dawdling is not in them
        assert 0.015 < by_key[key].stop - by_key[key].start < DAWDLE * 0.75
    assert by_key["b"].start >= by_key["a"].stop + DAWDLE  # b was handed out only after the scheduler was done with a
    # A task not lowered through `timed` falls back to hand-out .. take-back, which includes one delay.
    assert by_key["plain"].stop - by_key["plain"].start >= DAWDLE + 0.015
    assert trace._RAN == {}  # nothing left behind when the trace ends


def test_timed_records_nothing_outside_a_trace() -> None:
    assert timed("k", nap, 0.0) == 0.0
    assert trace._RAN == {}
