"""A schedule is data: the rewrites it applies to the exact graph, run as validated passes."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field

import networkx as nx

from dagtrain.errors import ConfigError
from dagtrain.graph.build import build_exact
from dagtrain.graph.validate import validate
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP

Pass = Callable[[nx.DiGraph, MLP], nx.DiGraph]


@dataclass(frozen=True)
class Schedule:
    """Base of every schedule: the exact graph, then ``rewrites()`` in order, validated after each.

    Passes are data: ``passes()`` lists their names, ``skip`` drops some by name and
    ``extra`` adds ``(after, pass)`` pairs, e.g.
    ``LayerLocal(10, extra=(("insert_syncs", my_pass),))``. A pass is a function
    ``(graph, model) -> graph``; its ``__name__`` names it.
    """

    skip: frozenset[str] = field(default=frozenset(), kw_only=True)
    extra: tuple[tuple[str, Pass], ...] = field(default=(), kw_only=True)
    name = "base"

    def __str__(self) -> str:
        edits = ([f"skip={sorted(self.skip)}"] if self.skip else []) + \
            ([f"extra={[(a, p.__name__) for a, p in self.extra]}"] if self.extra else [])
        return f"{type(self).__name__}({', '.join(edits)})"

    def rewrites(self) -> tuple[Pass, ...]:
        """The passes that turn the exact graph into this schedule's graph (none: exact SGD)."""
        return ()

    def pipeline(self) -> list[Pass]:
        """The rewrites that run, in order: ``rewrites()`` without ``skip``, with ``extra`` inserted."""
        names = ["build_exact", *(r.__name__ for r in self.rewrites())]
        unknown = sorted(set(self.skip) - set(names)) + sorted({after for after, _ in self.extra} - set(names))
        if unknown:
            raise ConfigError(f"no pass named {unknown[0]!r} in {self.name}; its passes are {', '.join(names)}")
        out: list[Pass] = []
        for after in names:
            if after != "build_exact":
                out += [r for r in self.rewrites() if r.__name__ == after and after not in self.skip]
            out += [p for a, p in self.extra if a == after]
        return out

    def passes(self) -> list[str]:
        """Names of the passes that build this schedule's graph, in order."""
        return ["build_exact", *(p.__name__ for p in self.pipeline())]

    def build(self, model: MLP, window: Window, batch_size: int, eval_parts: int | Sequence[int] = 1, *,
              stop_before: str | None = None) -> nx.DiGraph:
        """The fine graph of ``window`` under this schedule (or as it was before pass ``stop_before``).

        ``eval_parts``: how many parts an epoch-end evaluation is cut into, or each part's
        number of test samples (then each part is costed; see :func:`dagtrain.graph.build.build_exact`).

        Python's cyclic garbage collector is paused while the graph is built: its full
        collections scan every live object, so with it on, building grew faster than the
        graph (measured: 9.3 s per 10^5 nodes at 10^5 nodes, 27 s at 10^6; the graph
        holds no reference cycles that need collecting).
        """
        with _gc_paused():
            return self._build(model, window, batch_size, eval_parts, stop_before)

    def _build(self, model: MLP, window: Window, batch_size: int, eval_parts: int | Sequence[int],
               stop_before: str | None) -> nx.DiGraph:
        if stop_before is not None and stop_before not in self.passes()[1:]:
            raise ConfigError(f"no pass named {stop_before!r} runs on a built graph; the passes are "
                              f"{', '.join(self.passes()[1:]) or '(none)'} (build_exact makes the first graph)")
        g = validate(build_exact(model, window, batch_size, eval_parts), where="graph after pass build_exact")
        g.graph["n_layers"] = model.n_layers
        ran = ["build_exact"]
        for rewrite in self.pipeline():
            if rewrite.__name__ == stop_before:
                break
            g = validate(rewrite(g, model), where=f"graph after pass {rewrite.__name__}")
            ran.append(rewrite.__name__)
        g.graph["passes"] = ran
        return g

    def n_chains(self, model: MLP) -> int:
        """How many chains run concurrently between syncs (base: one, the whole step sequence)."""
        return 1

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

    def sync_steps(self, window: Window, model: MLP) -> list[int]:
        """The steps at which ``window``'s sync nodes merge the chains (base: none)."""
        return []


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """Base of the schedules whose chains meet at a sync every ``k`` steps (LayerLocal, LocalSGD).

    Intervals start at each window's start and windows are a multiple of k long, so every
    window begins and ends with merged weights; a chain's whole interval is one task.
    """

    k: int = 10

    def _check_k(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0:
            raise ConfigError(f"{type(self).__name__} k = {self.k!r} must be a positive integer (the steps between "
                              f"syncs), e.g. {type(self).__name__}(k=10)")

    def check(self, model: MLP, total_steps: int) -> None:
        """Refuse a k that no run of ``total_steps`` steps could reach."""
        if self.k > total_steps:
            raise ConfigError(f"{type(self).__name__} k = {self.k} is larger than the {total_steps} steps of the run, "
                              f"so no interval would end before the run does; use k <= {total_steps}")

    def align_window_steps(self, window_steps: int) -> int:
        """A multiple of k (at least k), so that every window starts on an interval boundary."""
        return max(1, window_steps // self.k) * self.k

    def segment_steps(self, requested: int | None, default: int) -> int:
        """A chain's whole interval is one task (its k steps in one Python call), unless a divisor of k is asked for."""
        if requested is None:
            return self.k
        if self.k % requested:
            raise ConfigError(f"segment_steps = {requested} must divide {type(self).__name__} k = {self.k}, or a task "
                              "would straddle a sync; leave it out to fuse each chain's interval into one task")
        return requested

    def interval_start(self, step: int, window: Window) -> int:
        """The first step of the interval holding ``step`` (intervals start at the window's start)."""
        return window.step0 + (step - window.step0) // self.k * self.k

    def sync_steps(self, window: Window, model: MLP) -> list[int]:
        """The end of every interval of ``window``: every k steps from its start, and its last step."""
        return [min(a + self.k, window.stop) for a in range(window.step0, window.stop, self.k)]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
