"""The interval experiment: accuracy and wall time of LayerLocal against the communication interval k.

For each k and data mode it trains the same model on the same data, in the same batch
order, and sets the measured time beside the seed's formula

    T(k) = T_seq / min(L, W) + (N / k) * t_sync

with every term measured in the same sweep: ``T_seq`` is Sync on one worker (the seed's
"former time"), ``N / k`` the number of syncs the run made, and ``t_sync`` the mean time
the run lost at a sync: from the last chain task of an interval finishing to the first
chain task of the next one starting.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dagtrain.data.store import Dataset
from dagtrain.errors import ConfigError
from dagtrain.execute.trace import TaskRecord
from dagtrain.model.mlp import MLP
from dagtrain.plan import Plan, compile  # noqa: A004
from dagtrain.result import TrainResult
from dagtrain.schedules.base import Schedule
from dagtrain.schedules.layerlocal import DATA_MODES, LayerLocal
from dagtrain.schedules.sync import Sync

# The seed presentation's MNIST table: test accuracy (%) by communication interval.
SEED_ACCURACY = {1000: 55.39, 100: 55.61, 10: 74.35, 5: 83.83, 1: 88.68}
DEFAULT_INTERVALS = (1000, 100, 10, 5, 1)


@dataclass(frozen=True)
class Settings:
    """Everything that defines a sweep's runs, apart from k and the data mode."""

    sizes: tuple[int, ...]
    activation: str
    loss: str
    batch_size: int
    epochs: int
    lr: float
    momentum: float
    seed: int = 0
    max_steps: int | None = None
    damping: float = 0.0  # LayerLocal's staleness correction (0: none, the seed's algorithm)
    compensate: bool = False  # LayerLocal's delay compensation (weight prediction from momentum; needs momentum > 0)
    eval_every: int | None = None  # compare: also evaluate every this many steps (rounded up to a schedule's interval)


PRESETS = {
    # The seed's network: one hidden layer of 100 sigmoid units, logistic outputs with the
    # seed's E(w), single-sample updates for one epoch (its time formula counts per sample).
    "seed": Settings((784, 100, 10), "sigmoid", "sigmoid_bce", batch_size=1, epochs=1, lr=0.1, momentum=0.0),
    # A deeper net at a practical batch size: four layers, so four chains on two cores.
    "deep": Settings((784, 256, 256, 256, 10), "relu", "softmax_xent", batch_size=128, epochs=6, lr=0.05,
                     momentum=0.9),
}


@dataclass
class SweepResult:
    """The rows of a sweep (one per run, baselines first) and the settings they share."""

    settings: Settings
    rows: list[dict[str, Any]]
    workers: int
    scheduler: str
    info: dict[str, Any] = field(default_factory=dict)

    def row(self, schedule: str, k: int | None = None, data: str | None = None) -> dict[str, Any]:
        """The row of one run, e.g. ``row("layerlocal", 10, "sharded")`` or ``row("sync-1")``."""
        for r in self.rows:
            if r["schedule"] == schedule and r["k"] == k and r["data"] == data:
                return r
        raise KeyError(f"no run {schedule} k={k} data={data} in this sweep")

    def settings_dict(self) -> dict[str, Any]:
        """Settings as plain JSON-able data."""
        return {**asdict(self.settings), "workers": self.workers, "scheduler": self.scheduler}


def sync_gaps(tasks: Sequence[TaskRecord]) -> list[float]:
    """Seconds lost at each sync: from the last chain task of an interval ending to the first of the next starting.

    Time spent evaluating the test set inside a gap (at an epoch's end) is not counted:
    Sync pays for the same evaluations, so they are part of T_seq, not of a sync.
    """
    intervals: dict[tuple[int, int], list[TaskRecord]] = {}
    for r in tasks:
        m = re.fullmatch(r"(?:chain|lane)\d+-(\d+)-w(\d+)(?:-r\d+)?", r.key)  # a chain's segment or a lane's interval
        if m:
            intervals.setdefault((int(m.group(2)), int(m.group(1))), []).append(r)
    evals = [(r.start, r.stop) for r in tasks if r.prefix == "eval"]
    gaps = []
    for a, b in itertools.pairwise(sorted(intervals)):
        lo, hi = max(r.stop for r in intervals[a]), min(r.start for r in intervals[b])
        gaps.append(max(0.0, hi - lo - _covered(evals, lo, hi)))
    return gaps


def _covered(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``spans`` inside ``[lo, hi]``."""
    total, reach = 0.0, lo
    for start, stop in sorted(spans):
        start, stop = max(start, reach), min(stop, hi)
        if stop > start:
            total += stop - start
            reach = stop
    return total


def _run_row(result: TrainResult, schedule: str, k: int | None, data: str | None, batch_size: int,
             n_layers: int, t_seq: float | None) -> dict[str, Any]:
    syncs = len(result.info["sync_steps"])  # not sync tasks: on two workers each lane runs its own copy of a sync
    gaps = sync_gaps(result.tasks)
    t_sync = sum(gaps) / len(gaps) if gaps else 0.0
    row: dict[str, Any] = {
        "schedule": schedule, "k": k, "data": data, "workers": result.info.get("workers"),
        "samples_between_syncs": result.samples // syncs if k and syncs else None, "syncs": syncs if k else None,
        "test_accuracy": result.test_accuracy,
        "train_loss": result.history[-1]["train_loss"] if result.history else None, "wall_time": result.wall_time,
        "t_sync_ms": 1e3 * t_sync if k else None,
        "speedup": None, "predicted_speedup": None, "measured_over_predicted": None,
    }
    if t_seq is not None:
        row["speedup"] = t_seq / result.wall_time
        if k is not None:
            predicted = t_seq / min(n_layers, result.info.get("workers") or 1) + syncs * t_sync
            row["predicted_time"] = predicted
            row["predicted_speedup"] = t_seq / predicted
            row["measured_over_predicted"] = row["speedup"] / row["predicted_speedup"]
    return row


def sweep(
    data: Dataset,
    *,
    preset: str = "seed",
    intervals: Sequence[int] = DEFAULT_INTERVALS,
    modes: Sequence[str] = DATA_MODES,
    scheduler: Any = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> SweepResult:
    """Train Sync (one worker, and every worker) and LayerLocal(k, mode) for each k and mode; measure and compare.

    ``preset`` is ``"seed"`` or ``"deep"`` (see :data:`PRESETS`); keyword ``overrides``
    replace its fields (``epochs=2``, ``max_steps=3000``, ``seed=1``...). ``scheduler``
    is where LayerLocal and the second Sync run (default: the threaded scheduler); the
    first Sync always runs on one worker, the synchronous scheduler.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(Settings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown sweep setting(s) {sorted(unknown)}; settable: {', '.join(Settings.__dataclass_fields__)}")
    settings = replace(PRESETS[preset], **overrides)
    for mode in modes:
        if mode not in DATA_MODES:
            raise ConfigError(f"unknown data mode {mode!r}; choose from {', '.join(DATA_MODES)}")
    schedules = [LayerLocal(int(k), mode, damping=settings.damping, compensate=settings.compensate)  # validated here
                 for mode in modes for k in intervals]
    model = MLP(settings.sizes, activation=settings.activation, loss=settings.loss, seed=settings.seed)
    def plan(schedule: Schedule) -> Plan:
        return compile(model, data, schedule, batch_size=settings.batch_size, epochs=settings.epochs, lr=settings.lr,
                       momentum=settings.momentum, max_steps=settings.max_steps, seed=settings.seed)

    plans = [plan(s) for s in schedules]  # refuses a k longer than the run before anything runs
    say = progress or (lambda _: None)

    say("Sync, one worker")
    base = plan(Sync()).run("sync")
    t_seq = base.wall_time
    rows = [_run_row(base, "sync-1", None, None, settings.batch_size, model.n_layers, t_seq)]
    say("Sync, all workers")
    wide = plan(Sync()).run(scheduler)
    rows.append(_run_row(wide, f"sync-{wide.info.get('workers')}", None, None, settings.batch_size, model.n_layers, t_seq))
    for schedule, compiled in zip(schedules, plans, strict=True):
        say(str(schedule))
        result = compiled.run(scheduler)
        rows.append(_run_row(result, "layerlocal", schedule.k, schedule.data, settings.batch_size, model.n_layers, t_seq))
    return SweepResult(settings, rows, workers=wide.info.get("workers") or 1, scheduler=wide.scheduler,
                       info={"n_layers": model.n_layers, "samples": base.samples, "t_seq": t_seq})
