"""Static analysis of a task graph with networkx: counts, critical path, width. Nothing runs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import networkx as nx


@dataclass
class GraphStats:
    """What a graph (or a sum of window graphs) holds and how parallel it can be."""

    ops: Counter[str] = field(default_factory=Counter)
    edges: Counter[str] = field(default_factory=Counter)
    work: float = 0.0
    span: float = 0.0
    span_ops: int = 0
    width: int = 0

    @property
    def parallelism(self) -> float:
        """Total work over critical-path work: the most workers that could be kept busy on average."""
        return self.work / self.span if self.span else 0.0

    def __add__(self, other: GraphStats) -> GraphStats:
        """Two graphs run one after the other: counts and spans add, width is the larger."""
        return GraphStats(self.ops + other.ops, self.edges + other.edges, self.work + other.work,
                          self.span + other.span, self.span_ops + other.span_ops, max(self.width, other.width))

    def scaled(self, n: int) -> GraphStats:
        """``n`` copies of this graph run one after the other."""
        return GraphStats(Counter({k: v * n for k, v in self.ops.items()}), Counter({k: v * n for k, v in self.edges.items()}),
                          self.work * n, self.span * n, self.span_ops * n, self.width if n else 0)


def critical_path(g: nx.DiGraph, weight: str = "cost") -> tuple[list[str], float]:
    """The heaviest path through ``g`` by node ``weight`` (flops by default) and its total."""
    best: dict[str, tuple[float, str | None]] = {}
    for key in nx.topological_sort(g):
        w = float(g.nodes[key].get(weight, 0.0))
        preds = [(best[p][0], p) for p in g.predecessors(key)]
        top = max(preds, default=(0.0, None))
        best[key] = (top[0] + w, top[1])
    if not best:
        return [], 0.0
    end = max(best, key=lambda k: best[k][0])
    path: list[str] = []
    node: str | None = end
    while node is not None:
        path.append(node)
        node = best[node][1]
    return path[::-1], best[end][0]


def analyze(g: nx.DiGraph) -> GraphStats:
    """Counts by kind, total work, critical path (by cost) and width (largest topological generation)."""
    path, span = critical_path(g)
    return GraphStats(
        ops=Counter(d["kind"] for _, d in g.nodes(data=True)),
        edges=Counter(d["kind"] for _, _, d in g.edges(data=True)),
        work=sum(d.get("cost", 0.0) for _, d in g.nodes(data=True)),
        span=span,
        span_ops=len(path),
        width=max((len(gen) for gen in nx.topological_generations(g)), default=0),
    )


@dataclass
class Analysis:
    """What ``plan.analyze()`` reports: work, critical path, parallelism, width, and predicted wall time."""

    schedule: str
    workers: int
    work_flops: float
    span_flops: float
    widths: list[int]
    predicted_seconds: float
    formula_seconds: float | None
    sync_seconds: float | None
    syncs: int
    windows: int
    measured: bool
    span_seconds: float = 0.0

    @property
    def parallelism(self) -> float:
        """Work over critical path."""
        return self.work_flops / self.span_flops if self.span_flops else 0.0

    def __str__(self) -> str:
        lines = [
            f"analysis of {self.schedule} over {self.windows} window(s) (each window shape built once)",
            f"  work {self.work_flops / 1e9:.4g} GFLOP, critical path {self.span_flops / 1e9:.4g} GFLOP, "
            f"parallelism {self.parallelism:.2f}",
            f"  width per topological generation (window 0): max {max(self.widths, default=0)}, "
            f"first {self.widths[:12]}",
            f"  critical path {self.span_seconds:.3f} s; "
            f"predicted wall time on {self.workers} worker(s): {self.predicted_seconds:.3f} s "
            f"(list scheduling over {'measured task times' if self.measured else 'the cost model'})",
        ]
        if self.formula_seconds is not None:
            lines.append(f"  seed's formula T_seq / min(L, W) + syncs * t_sync: {self.formula_seconds:.3f} s "
                         f"({self.syncs} syncs, t_sync {1e3 * (self.sync_seconds or 0):.3f} ms)")
        return "\n".join(lines)
