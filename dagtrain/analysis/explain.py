"""Why does one op wait for another? The dependency path, each edge named, from the graph alone."""

from __future__ import annotations

import itertools

import networkx as nx

from dagtrain.errors import ConfigError


def explain(g: nx.DiGraph, a: str, b: str) -> str:
    """Why ``b`` waits for ``a``: the shortest dependency path, one line per edge (data or control, and which pass made it).

    Returns a line saying "no dependency" when ``b`` can start without ``a``.
    """
    for key in (a, b):
        if key not in g:
            near = sorted(k for k in g if k.split(":")[0] == key.split(":")[0])[:5]
            raise ConfigError(f"no op {key!r} in this graph; ops of that kind look like {near}")
    if a == b or not nx.has_path(g, a, b):
        return f"{b} does not wait for {a}: no dependency"
    path = nx.shortest_path(g, a, b)
    lines = [f"{b} waits for {a} through {len(path) - 1} edge(s):"]
    for u, v in itertools.pairwise(path):
        d = g.edges[u, v]
        what = ", ".join(f"{field} -> {port}" for field, port in d["bind"]) if d["kind"] == "data" else "order only"
        lines.append(f"  {u} -> {v}  [{d['kind']}: {what}; made by {d['made_by']}]")
    return "\n".join(lines)
