"""A picture of one sync interval of the fine graph: one colour per layer chain, sync nodes marked.

Drawn with matplotlib (no graphviz needed). Columns are topological generations, rows are
chains; data edges are solid, control edges dashed. The file type follows the suffix
(``.svg`` or ``.png``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import networkx as nx

from dagtrain.data.atomic import atomic_write
from dagtrain.errors import ConfigError

COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


def interval_subgraph(g: nx.DiGraph) -> nx.DiGraph:
    """The ops of the first full interval (between the first two syncs, or the window when it has none), with its syncs."""
    syncs = sorted(d["step"] for _, d in g.nodes(data=True) if d["kind"] == "sync")
    steps = sorted({d["step"] for _, d in g.nodes(data=True) if d["kind"] == "forward"})
    lo, hi = (syncs[0], syncs[1]) if len(syncs) > 1 else (steps[0], steps[0] + min(len(steps), 3))
    keep = [k for k, d in g.nodes(data=True)
            if (d["kind"] not in ("input", "output", "eval", "sync") and d["step"] is not None and lo <= d["step"] < hi)
            or (d["kind"] == "sync" and d["step"] in (lo, hi))]
    return g.subgraph(keep).copy()


def draw(g: nx.DiGraph, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write a picture of ``g``'s first sync interval to ``path`` (.svg or .png); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if out.suffix.lower() not in (".svg", ".png"):
        raise ConfigError(f"cannot draw to {out.name!r}: use a .svg or .png file name")
    sub = interval_subgraph(g)
    pos: dict[str, tuple[float, float]] = {}
    for x, generation in enumerate(nx.topological_generations(sub)):
        for i, key in enumerate(sorted(generation)):
            d = sub.nodes[key]
            lane = 0 if d["chain"] is None else d["chain"]
            pos[key] = (x, -2.0 * lane - 0.6 * (i % 3))
    fig_w = max(8.0, 0.45 * (1 + max((p[0] for p in pos.values()), default=0)))
    fig, ax = plt.subplots(figsize=(min(fig_w, 40.0), 2 + 1.2 * (1 + g.graph.get("n_layers", 1))))
    colour = {k: ("black" if d["chain"] is None else COLOURS[(d["chain"] - 1) % len(COLOURS)]) for k, d in sub.nodes(data=True)}
    for kind, style in (("data", "solid"), ("control", "dashed")):
        edges = [(u, v) for u, v, d in sub.edges(data=True) if d["kind"] == kind]
        nx.draw_networkx_edges(sub, pos, edgelist=edges, style=style, alpha=0.35, arrowsize=6, ax=ax)
    plain = [k for k, d in sub.nodes(data=True) if d["kind"] != "sync"]
    syncs = [k for k, d in sub.nodes(data=True) if d["kind"] == "sync"]
    nx.draw_networkx_nodes(sub, pos, nodelist=plain, node_color=[colour[k] for k in plain], node_size=60, ax=ax)
    nx.draw_networkx_nodes(sub, pos, nodelist=syncs, node_color="black", node_shape="D", node_size=160, ax=ax)
    nx.draw_networkx_labels(sub, pos, labels={k: k for k in syncs}, font_size=8, verticalalignment="bottom", ax=ax)
    chains = sorted({d["chain"] for _, d in sub.nodes(data=True) if d["chain"] is not None})
    for c in chains:
        ax.plot([], [], "o", color=COLOURS[(c - 1) % len(COLOURS)], label=f"chain {c} ({g.graph.get('chain_role', 'layer')} {c})")
    ax.plot([], [], "D", color="black", label="sync")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"one sync interval: {sub.number_of_nodes()} ops, {sub.number_of_edges()} edges", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix[1:].lower(), dpi=100)
    plt.close(fig)
    return atomic_write(out, buf.getvalue())
