"""A schedule is data: the rewrites it applies to the exact graph, run as validated passes."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import networkx as nx

from dagtrain.graph.build import build_exact
from dagtrain.graph.validate import validate
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP

Pass = Callable[[nx.DiGraph, MLP], nx.DiGraph]


@dataclass(frozen=True)
class Schedule:
    """Base of every schedule: the exact graph, then ``rewrites()`` in order, validated after each."""

    name = "base"

    def rewrites(self) -> tuple[Pass, ...]:
        """The passes that turn the exact graph into this schedule's graph (none: exact SGD)."""
        return ()

    def build(self, model: MLP, window: Window, batch_size: int, eval_parts: int = 1) -> nx.DiGraph:
        """The fine graph of ``window`` under this schedule."""
        g = validate(build_exact(model, window, batch_size, eval_parts), where="graph after pass build_exact")
        for rewrite in self.rewrites():
            g = validate(rewrite(g, model), where=f"graph after pass {rewrite.__name__}")
        g.graph["passes"] = ["build_exact", *(r.__name__ for r in self.rewrites())]
        return g

    def check(self, model: MLP, total_steps: int) -> None:
        """Raise a ConfigError if this schedule cannot run ``total_steps`` steps of ``model`` (base: always can)."""

    def align_window_steps(self, window_steps: int) -> int:
        """The window length to use given the requested one (base: as requested)."""
        return window_steps

    def segment_steps(self, requested: int | None, default: int) -> int:
        """Steps fused into one task: as requested, else the plan's default (sized from the model's flops)."""
        return default if requested is None else requested

    def canonical_window(self, window: Window, model: MLP) -> Window:
        """The window, shifted to start at step 0: the graph of one stands for all of its shape."""
        return Window(0, 0, 0, 0, window.n_steps, window.evaluate)

    def shape_key(self, window: Window, model: MLP) -> Hashable:
        """Windows with equal keys have the same graph up to a shift of steps (so share one program)."""
        return self.canonical_window(window, model)
