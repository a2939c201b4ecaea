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

    def shape_key(self, window: Window) -> Hashable:
        """Windows with equal keys have the same graph up to a shift of steps (so share one program)."""
        return (window.n_steps, window.evaluate)
