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

A sync triggered by the drift of the chains from the snapshot needs the weights of a run
in progress, so it cannot be decided when a window's graph is built; it is not built yet.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import networkx as nx

from dagtrain.errors import ConfigError
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP
from dagtrain.schedules.base import IntervalSchedule, Pass, Schedule
from dagtrain.schedules.layerlocal import LayerLocal


@dataclass(frozen=True)
class Adaptive(Schedule):
    """The inner interval schedule with ``k`` multiplied by ``growth`` every ``every`` epochs, at most ``levels`` times."""

    inner: IntervalSchedule = field(default_factory=lambda: LayerLocal(10, "sharded"))
    growth: int = 2
    every: int = 1
    levels: int = 3
    name = "adaptive"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, IntervalSchedule):
            raise ConfigError(f"Adaptive needs a schedule with a sync interval (LayerLocal or LocalSGD), got {self.inner!r}")
        for name, value, low in (("growth", self.growth, 1), ("every", self.every, 1), ("levels", self.levels, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Adaptive {name} = {value!r} must be an integer >= {low}, "
                                  "e.g. Adaptive(LayerLocal(10), growth=2, every=1, levels=3)")

    def __str__(self) -> str:
        return f"Adaptive({self.inner}, growth={self.growth}, every={self.every}, levels={self.levels})"

    def level(self, epoch: int) -> int:
        """How many times k has grown by ``epoch``."""
        return min(epoch // self.every, self.levels)

    def k_at(self, epoch: int) -> int:
        """The sync interval of ``epoch``."""
        return int(self.inner.k * self.growth ** self.level(epoch))

    def at(self, window: Window) -> IntervalSchedule:
        """The inner schedule with the k of ``window``'s epoch."""
        return replace(self.inner, k=self.k_at(window.epoch))

    # --- the inner schedule's passes, with this window's k ---
    def rewrites(self) -> tuple[Pass, ...]:
        """The inner schedule's passes (built per window with that window's k)."""
        return self.inner.rewrites()

    def pipeline(self) -> list[Pass]:
        """The inner schedule's pipeline."""
        return self.inner.pipeline()

    def build(self, model: MLP, window: Window, batch_size: int, eval_parts: int = 1, *,
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
        return Window(c.index, self.level(window.epoch) * self.every, c.step0, c.batch0, c.n_steps, c.evaluate)

    def shape_key(self, window: Window, model: MLP) -> Hashable:
        """Windows of the same level and inner shape share a program."""
        return self.canonical_window(window, model)

    def sync_steps(self, window: Window, model: MLP) -> list[int]:
        """The inner schedule's sync points in ``window``, with the window's k."""
        return self.at(window).sync_steps(window, model)
