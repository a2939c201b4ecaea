"""``Adaptive(inner, growth, every, levels)``: a sync interval that grows on a schedule, chosen per window.

Local-SGD and layer-local training need frequent syncs early, while the weights move fast,
and fewer later. ``Adaptive(LayerLocal(10, "sharded"), growth=2, every=1, levels=3)`` runs
epoch e with ``k_e = 10 * 2 ** min(e // 1, 3)``: 10, 20, 40, 80, 80, ... The rewrite is the
inner schedule's own passes, applied to each window with that window's k: the choice is
made between windows, and :meth:`dagtrain.plan.Plan.sync_steps` (also
``result.info["sync_steps"]``) records every sync point chosen.

Every k_e is a multiple of the inner k, so chain tasks keep the inner k's length and
windows are a multiple of the largest k. ``growth=1`` (or ``levels=0``) is the inner
schedule exactly.

``Adaptive(LayerLocal(10), growth=2, levels=3, drift=0.01)`` picks k from the weights
instead: after each window the run measures how far the weights moved per sync interval,
relative to their size (:meth:`Adaptive.interval_drift`); above ``drift`` the next window
syncs twice as often (one level down), below ``drift / growth`` half as often (one level
up), between the two it keeps k. The graph of every level is built before the run; the
choice between them is made between windows, and ``result.info["adaptive"]`` records each
window's k and drift (``result.info["sync_steps"]`` the syncs that ran).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import networkx as nx
import numpy as np

from dagtrain.errors import ConfigError
from dagtrain.graph.window import Window
from dagtrain.model.functional import Params
from dagtrain.model.mlp import MLP
from dagtrain.schedules.base import IntervalSchedule, Pass, Schedule
from dagtrain.schedules.layerlocal import LayerLocal


@dataclass(frozen=True)
class Adaptive(Schedule):
    """The inner interval schedule with ``k`` multiplied by ``growth`` every ``every`` epochs, at most ``levels`` times.

    With ``drift`` set, the level is chosen after each window from the weights' drift per
    interval instead of by epoch (``every`` is then unused).
    """

    inner: IntervalSchedule = field(default_factory=lambda: LayerLocal(10, "sharded"))
    growth: int = 2
    every: int = 1
    levels: int = 3
    drift: float | None = None
    name = "adaptive"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, IntervalSchedule):
            raise ConfigError(f"Adaptive needs a schedule with a sync interval (LayerLocal or LocalSGD), got {self.inner!r}")
        for name, value, low in (("growth", self.growth, 1), ("every", self.every, 1), ("levels", self.levels, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Adaptive {name} = {value!r} must be an integer >= {low}, "
                                  "e.g. Adaptive(LayerLocal(10), growth=2, every=1, levels=3)")
        if self.drift is not None and (isinstance(self.drift, bool) or not isinstance(self.drift, (int, float))
                                       or not math.isfinite(self.drift) or self.drift <= 0):
            raise ConfigError(f"Adaptive drift = {self.drift!r} must be a positive number (the relative weight change "
                              "per interval that triggers more syncs), e.g. drift=0.01")

    def __str__(self) -> str:
        if self.drift is not None:
            return f"Adaptive({self.inner}, growth={self.growth}, levels={self.levels}, drift={self.drift})"
        return f"Adaptive({self.inner}, growth={self.growth}, every={self.every}, levels={self.levels})"

    def level(self, epoch: int) -> int:
        """How many times k has grown by ``epoch`` (on drift: 0, the level a run starts at)."""
        return 0 if self.drift is not None else min(epoch // self.every, self.levels)

    def level_of(self, window: Window) -> int:
        """The level ``window`` runs at: the one a run chose for it, else its epoch's."""
        return self.level(window.epoch) if window.level is None else window.level

    def k_at(self, epoch: int) -> int:
        """The sync interval of ``epoch``."""
        return self.k_of_level(self.level(epoch))

    def k_of_level(self, level: int) -> int:
        """The sync interval at ``level``: ``k * growth ** level``."""
        if not 0 <= level <= self.levels:
            raise ConfigError(f"level {level} is outside 0..{self.levels} of {self}")
        return int(self.inner.k * self.growth ** level)

    def at(self, window: Window) -> IntervalSchedule:
        """The inner schedule with the k of ``window``'s level."""
        return replace(self.inner, k=self.k_of_level(self.level_of(window)))

    # --- choosing k from drift, between windows ---
    @property
    def on_drift(self) -> bool:
        """Whether a run picks the level of each window from the drift (``drift`` is set)."""
        return self.drift is not None

    def interval_drift(self, before: Sequence[Params], after: Sequence[Params], window: Window) -> float:
        """How far the weights moved per sync interval in ``window``, relative to their size (the largest over layers).

        ``max_layer |W_after - W_before| / |W_before|`` (Frobenius norms) divided by the number
        of intervals the window held at its k: 0.01 means a layer's weights moved about 1% of
        their norm between syncs, the distance a stale snapshot lags behind.
        """
        intervals = max(1.0, window.n_steps / self.at(window).k)
        moved = max(float(np.linalg.norm(a.W - b.W) / max(float(np.linalg.norm(b.W)), 1e-12))
                    for a, b in zip(after, before, strict=True))
        return moved / intervals

    def next_level(self, level: int, drift: float) -> int:
        """The level after a window at ``level`` that drifted ``drift`` per interval."""
        assert self.drift is not None
        if drift > self.drift:
            return max(level - 1, 0)
        if drift < self.drift / self.growth:
            return min(level + 1, self.levels)
        return level

    # --- the inner schedule's passes, with this window's k ---
    def rewrites(self) -> tuple[Pass, ...]:
        """The inner schedule's passes (built per window with that window's k)."""
        return self.inner.rewrites()

    def pipeline(self) -> list[Pass]:
        """The inner schedule's pipeline."""
        return self.inner.pipeline()

    def build(self, model: MLP, window: Window, batch_size: int, eval_parts: int | Sequence[int] = 1, *,
              stop_before: str | None = None) -> nx.DiGraph:
        """The inner schedule's graph of ``window``, with the k of the window's epoch."""
        return self.at(window).build(model, window, batch_size, eval_parts, stop_before=stop_before)

    def n_chains(self, model: MLP) -> int:
        """As the inner schedule."""
        return self.inner.n_chains(model)

    def check(self, model: MLP, total_steps: int) -> None:
        """The inner schedule's check, at its smallest k."""
        self.inner.check(model, total_steps)

    def align_window_steps(self, window_steps: int) -> int:
        """A multiple of the largest k, so every window starts on an interval boundary of every epoch."""
        largest = int(self.inner.k * self.growth ** self.levels)
        return max(1, window_steps // largest) * largest

    def segment_steps(self, requested: int | None, default: int) -> int:
        """The inner k's segments: they divide every epoch's k."""
        return self.inner.segment_steps(requested, default)

    def canonical_window(self, window: Window, model: MLP) -> Window:
        """The inner canonical window, dated to the first epoch of the same level (so it builds with the same k)."""
        c = self.at(window).canonical_window(window, model)
        level = self.level_of(window)
        return Window(c.index, 0 if self.on_drift else level * self.every, c.step0, c.batch0, c.n_steps, c.evaluate,
                      level if self.on_drift else None)

    def shape_key(self, window: Window, model: MLP) -> Hashable:
        """Windows of the same level and inner shape share a program."""
        return self.canonical_window(window, model)

    def sync_steps(self, window: Window, model: MLP) -> list[int]:
        """The inner schedule's sync points in ``window``, with the window's k."""
        return self.at(window).sync_steps(window, model)
