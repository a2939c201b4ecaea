"""Schedules side by side on time-to-accuracy: the same model, data, batch order and machine.

``compare(data, ["sync", "layerlocal:10:sharded", "localsgd:4:2"])`` trains each schedule
with the settings of a preset and records its test accuracy after every epoch against
the wall time so far. The table gives the final accuracy, wall time, the time each run
first reached each accuracy target (95% and 97% by default) and its speed-up over Sync to
that target; the plot puts every run's accuracy-against-time curve on one axis.

Schedules are named by short specs: ``sync``, ``layerlocal:K[:shared|sharded[:DAMPING]]``,
``localsgd:K:REPLICAS``, ``delayed:STAGES:MICROBATCHES[:nostash]``, ``hybrid:K:MODE:K2:REPLICAS``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dagtrain.data.atomic import atomic_write
from dagtrain.data.store import Dataset
from dagtrain.errors import ConfigError
from dagtrain.experiments.sweep import PRESETS, Settings
from dagtrain.model.mlp import MLP
from dagtrain.plan import compile  # noqa: A004
from dagtrain.schedules.base import Schedule
from dagtrain.schedules.delayed import DelayedGradient
from dagtrain.schedules.hybrid import Hybrid
from dagtrain.schedules.layerlocal import LayerLocal
from dagtrain.schedules.localsgd import LocalSGD
from dagtrain.schedules.sync import Sync

DEFAULT_SCHEDULES = ("sync", "layerlocal:10:sharded", "layerlocal:100:sharded", "localsgd:2:2", "localsgd:10:2")
DEFAULT_TARGETS = (0.95, 0.97)


def parse_schedule(spec: str) -> Schedule:
    """A schedule from its short spec: ``sync``, ``layerlocal:K[:MODE[:DAMPING]][:compensate]``,
    ``localsgd:K:REPLICAS``, ``delayed:STAGES:MICROBATCHES[:nostash]``, ``hybrid:K:MODE:K2:REPLICAS``."""
    name, *args = spec.strip().lower().split(":")
    compensate = name == "layerlocal" and args[-1:] == ["compensate"]
    args = args[:-1] if compensate else args
    numbers = [int(a) for a in args if a.isdigit()]
    if name == "sync" and not args:
        return Sync()
    if name == "layerlocal" and 1 <= len(args) <= 3 and args[0].isdigit():
        damping = _number(args[2]) if len(args) == 3 else 0.0
        if damping is not None:
            return LayerLocal(numbers[0], args[1] if len(args) > 1 else "shared", damping=damping, compensate=compensate)
    if name == "localsgd" and len(args) == 2 and len(numbers) == 2:
        return LocalSGD(numbers[0], numbers[1])
    if name == "hybrid" and len(args) == 4 and args[0].isdigit() and not args[1].isdigit() and len(numbers) == 3:
        return Hybrid(LayerLocal(numbers[0], args[1]), LocalSGD(numbers[1], numbers[2]))
    if name == "delayed" and len(numbers) == 2 and (len(args) == 2 or args[2:] == ["nostash"]):
        return DelayedGradient(numbers[0], numbers[1], stashing=len(args) == 2)
    raise ConfigError(f"cannot read schedule {spec!r}; write sync, layerlocal:K[:shared|sharded[:DAMPING]][:compensate], "
                      "localsgd:K:REPLICAS, delayed:STAGES:MICROBATCHES[:nostash] or hybrid:K:MODE:K2:REPLICAS, "
                      "e.g. layerlocal:10:sharded")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class CompareResult:
    """One row per schedule (Sync first) and each run's accuracy curve ``[(seconds, accuracy), ...]``."""

    settings: Settings
    rows: list[dict[str, Any]]
    curves: dict[str, list[tuple[float, float]]]
    targets: tuple[float, ...]
    scheduler: str
    workers: int
    info: dict[str, Any] = field(default_factory=dict)


def time_to(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """Seconds until the curve first reaches ``target`` accuracy (None if it never does)."""
    return next((t for t, acc in curve if acc >= target), None)


def eval_points(schedule: Schedule, every: int | None) -> int | None:
    """``every`` rounded up to a multiple of ``schedule``'s sync interval (its window alignment), or None."""
    if every is None:
        return None
    unit = schedule.align_window_steps(1)
    return -(-every // unit) * unit


def compare(
    data: Dataset,
    schedules: Sequence[str | Schedule] = DEFAULT_SCHEDULES,
    *,
    preset: str = "deep",
    targets: Sequence[float] = DEFAULT_TARGETS,
    scheduler: Any = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> CompareResult:
    """Train each schedule with the preset's settings on ``scheduler`` (default: threads); rows and curves.

    Sync always runs (first) as the baseline of the speed-ups, even if not listed. With
    ``eval_every=N`` (a setting) each run also evaluates every N steps, rounded up to a
    multiple of its schedule's sync interval: finer time-to-accuracy, and every curve pays
    the same extra evaluation time.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(Settings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; settable: {', '.join(Settings.__dataclass_fields__)}")
    for t in targets:
        if not 0 < t <= 1:
            raise ConfigError(f"accuracy target {t!r} must be in (0, 1], e.g. 0.97")
    settings = replace(PRESETS[preset], **overrides)
    parsed = [parse_schedule(s) if isinstance(s, str) else s for s in schedules]
    parsed = [Sync()] + [s for s in parsed if s != Sync()]
    model = MLP(settings.sizes, activation=settings.activation, loss=settings.loss, seed=settings.seed)
    plans = [compile(model, data, s, batch_size=settings.batch_size, epochs=settings.epochs, lr=settings.lr,
                     momentum=settings.momentum, max_steps=settings.max_steps, seed=settings.seed,
                     eval_every=eval_points(s, settings.eval_every)) for s in parsed]
    say = progress or (lambda _: None)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[float, float]]] = {}
    scheduler_name, workers = "threads", 1
    for schedule, plan in zip(parsed, plans, strict=True):
        say(str(schedule))
        result = plan.run(scheduler)
        scheduler_name, workers = result.scheduler, int(result.info.get("workers") or 1)
        curve = [(float(h["seconds"]), float(h["test_accuracy"])) for h in result.history
                 if h.get("test_accuracy") is not None]
        curves[str(schedule)] = curve
        row: dict[str, Any] = {"schedule": str(schedule), "test_accuracy": result.test_accuracy,
                               "wall_time": result.wall_time, "speedup": rows[0]["wall_time"] / result.wall_time
                               if rows else 1.0}
        for t in targets:
            reached = time_to(curve, t)
            row[f"time_to_{t:.0%}"] = reached
            base = rows[0].get(f"time_to_{t:.0%}") if rows else reached
            row[f"speedup_to_{t:.0%}"] = base / reached if base is not None and reached else None
        rows.append(row)
    return CompareResult(settings, rows, curves, tuple(targets), scheduler_name, workers,
                         info={"n_layers": model.n_layers})


def markdown_table(result: CompareResult) -> str:
    """The comparison as a Markdown table."""
    header = ["schedule", "test acc %", "wall s", "speed-up (wall)"]
    for t in result.targets:
        header += [f"s to {t:.0%}", f"speed-up to {t:.0%}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in result.rows:
        cells = [row["schedule"], f"{100 * row['test_accuracy']:.2f}", f"{row['wall_time']:.2f}", f"{row['speedup']:.2f}x"]
        for t in result.targets:
            reached, speedup = row[f"time_to_{t:.0%}"], row[f"speedup_to_{t:.0%}"]
            cells += ["never" if reached is None else f"{reached:.2f}", "" if speedup is None else f"{speedup:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: CompareResult) -> bytes:
    """A PNG of test accuracy against wall time, every schedule on one axis, the targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    bottom = 100 * min(result.targets) - 5
    for name, curve in result.curves.items():
        below = bool(curve) and all(100 * a < bottom for _, a in curve)
        ax.plot([t for t, _ in curve], [100 * a for _, a in curve], marker="o",
                label=f"{name} (below the axis: best {100 * max(a for _, a in curve):.1f}%)" if below else name,
                lw=2.2 if name == "Sync()" else 1.4, color="k" if name == "Sync()" else None)
    for t in result.targets:
        ax.axhline(100 * t, color="0.6", ls="--", lw=0.8)
    finals = [100 * a for c in result.curves.values() for _, a in c]
    ax.set_ylim(max(min(finals, default=0) - 1, bottom), 100)
    ax.set_xlim(left=0)
    ax.set_xlabel("wall time, s")
    ax.set_ylabel("test accuracy after each epoch, %")
    s = result.settings
    ax.set_title(f"{'-'.join(map(str, s.sizes))}, batch {s.batch_size}, {result.workers} workers ({result.scheduler})",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    from dagtrain.experiments.report import png_bytes

    return png_bytes(fig)


def save(result: CompareResult, folder: str | os.PathLike[str], *, command: str | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``curves.json``, ``settings.json`` and ``plot.png`` atomically."""
    from dagtrain.experiments.report import versions

    out = Path(folder).expanduser()
    command = command or " ".join(["dagtrain", *sys.argv[1:]])
    s = result.settings
    header = (f"# Schedules compared on time-to-accuracy\n\n"
              f"Model {'-'.join(map(str, s.sizes))} ({s.activation} hidden, {s.loss}), batch {s.batch_size}, "
              f"lr {s.lr}, momentum {s.momentum}, {s.epochs} epoch(s), seed {s.seed}; "
              f"{result.workers} workers on the {result.scheduler} scheduler. Speed-ups are against Sync on the "
              f"same workers.\n\nReproduce: `{command}`\n\n")
    paths = {name: out / name for name in ("table.md", "table.csv", "curves.json", "settings.json", "plot.png")}
    atomic_write(paths["table.md"], header + markdown_table(result) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result.rows[0]))
    writer.writeheader()
    writer.writerows(result.rows)
    atomic_write(paths["table.csv"], buf.getvalue())
    atomic_write(paths["curves.json"], json.dumps(result.curves, indent=1) + "\n")
    settings = {**asdict(result.settings), "workers": result.workers, "scheduler": result.scheduler,
                "targets": list(result.targets), "versions": versions(), "command": command}
    atomic_write(paths["settings.json"], json.dumps(settings, indent=2) + "\n")
    atomic_write(paths["plot.png"], plot(result))
    return paths
