"""An EEG-style timeline of a run, like Figure 12 of the TensorFlow whitepaper.

One row per worker thread, one bar per task, one colour per layer chain (syncs black,
Sync's segments blue, loads grey, evaluation green), time in ms since the run began.
HTML is interactive (bokeh: hover shows the task); PNG is drawn with matplotlib. Both are
written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dagtrain.data.atomic import atomic_write
from dagtrain.execute.trace import TaskRecord

CHAIN_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"]
FIXED = {"sync": "#000000", "train": "#4c72b0", "load": "#999999", "eval": "#55a868", "out": "#cccccc", "in": "#cccccc"}


def colour_of(prefix: str) -> str:
    """The colour of a task prefix: ``chain3`` -> the third chain colour, ``lane0`` -> the first, ``sync`` -> black."""
    if prefix.startswith("chain") and prefix[5:].isdigit():
        return CHAIN_COLOURS[(int(prefix[5:]) - 1) % len(CHAIN_COLOURS)]
    if prefix.startswith("lane") and prefix[4:].isdigit():  # lanes count from 0
        return CHAIN_COLOURS[int(prefix[4:]) % len(CHAIN_COLOURS)]
    return FIXED.get(prefix, "#dddddd")


def _rows(tasks: Sequence[TaskRecord]) -> list[str]:
    return sorted({r.worker for r in tasks})


def timeline_html(tasks: Sequence[TaskRecord], path: str | os.PathLike[str], *, title: str = "dagtrain run") -> Path:
    """Write an interactive bokeh timeline (a self-contained HTML file)."""
    from bokeh.embed import file_html
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    rows = _rows(tasks)
    source = ColumnDataSource({
        "left": [1e3 * r.start for r in tasks], "right": [1e3 * r.stop for r in tasks],
        "row": [r.worker for r in tasks], "task": [r.key for r in tasks],
        "ms": [1e3 * (r.stop - r.start) for r in tasks], "colour": [colour_of(r.prefix) for r in tasks]})
    fig = figure(y_range=FactorRange(factors=rows[::-1]), height=120 + 40 * len(rows), width=1100, title=title,
                 x_axis_label="time (ms)", tools="xpan,xwheel_zoom,reset,save")
    fig.hbar(y="row", left="left", right="right", height=0.7, color="colour", source=source, name="tasks")
    fig.add_tools(HoverTool(tooltips=[("task", "@task"), ("ms", "@ms{0.00}"), ("worker", "@row")]))
    return atomic_write(path, file_html(fig, INLINE, title))


def timeline_png(tasks: Sequence[TaskRecord], path: str | os.PathLike[str], *, title: str = "dagtrain run") -> Path:
    """Write the timeline as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(tasks)
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.5 * len(rows)))
    for i, row in enumerate(rows):
        mine = [r for r in tasks if r.worker == row]
        ax.broken_barh([(1e3 * r.start, 1e3 * (r.stop - r.start)) for r in mine], (i - 0.35, 0.7),
                       facecolors=[colour_of(r.prefix) for r in mine])
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(title, fontsize=10)
    for prefix in sorted({r.prefix for r in tasks}):
        ax.plot([], [], "s", color=colour_of(prefix), label=prefix)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())
