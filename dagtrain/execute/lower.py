"""Lower a window's programs to a Dask graph: a plain dict of ``dask.task_spec`` nodes.

Keys read ``<task>-w<window>`` (for example ``train-3-w12``, ``load-3-w12``,
``eval-e0-w12``), so Dask's dashboard groups them by prefix.
"""

from __future__ import annotations

from typing import Any

from dask.task_spec import DataNode, Task, TaskRef

from dagtrain.execute.ops import RunConfig
from dagtrain.execute.program import WindowProgram, run_task
from dagtrain.execute.trace import timed
from dagtrain.graph.window import Window


def dask_key(task: str, window: Window, attempt: int = 0) -> str:
    """The Dask key of fused task ``task`` in ``window`` (``-r1``... on a resubmitted window)."""
    return f"{task}-w{window.index}" + (f"-r{attempt}" if attempt else "")


def lower(program: WindowProgram, config: RunConfig, window: Window, state: dict[tuple[str, str], Any],
          attempt: int = 0) -> dict[str, Any]:
    """The Dask graph of ``window``; ``state`` (the window's input values) becomes a data node."""
    position = (window.epoch, window.batch0, window.step0)
    in_key = dask_key("in", window, attempt)
    dsk: dict[str, Any] = {in_key: DataNode(in_key, state)}
    for t in program.tasks:
        key = dask_key(t.name, window, attempt)
        refs = [TaskRef(dask_key(up, window, attempt)) for up in t.upstream]
        dsk[key] = Task(key, timed, key, run_task, t, config, position, *refs)
    return dsk
