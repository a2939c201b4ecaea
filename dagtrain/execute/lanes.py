"""The lanes pass: pack independent chains onto ``workers`` lanes with control edges, heaviest first.

Between two syncs LayerLocal's chains (and LocalSGD's replicas) share nothing, so a free
worker may take any of them. Dask's local schedulers pick among ready tasks in
``dask.order``'s ranking, which for symmetric chains depends on string hashing: the
heaviest chain (chain 1 runs the whole backward pass) often starts last, and the other
worker idles at the sync. Measured on 4 chains and 2 workers at k=10: 14-24% idle.

This pass decides the order before anything runs, the way a list scheduler with known
costs would (longest processing time first). For each interval between syncs it deals
the chains' work to ``workers`` lanes (heaviest chain to the least-loaded lane) and
chains each lane's ops into one sequence with control edges: the last ops of one chain's
interval precede the first ops of the next chain in the same lane. A lane then has one
ready task at a time, so ``workers`` workers run the lanes side by side, whatever order
the scheduler would have picked. No value flows along the new edges, so the math (and
every bit of the result) is unchanged.

Graphs whose chains are not independent (no ``chains_independent`` flag: Sync,
DelayedGradient's pipeline) and ``workers == 1`` come back unchanged.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Hashable, Mapping
from typing import TypeVar

import networkx as nx

from dagtrain.graph.ir import add_control

Bin = TypeVar("Bin", bound=Hashable)


def longest_first(costs: Mapping[int, float], bins: list[Bin]) -> dict[int, Bin]:
    """Item -> bin: the heaviest item first, each to the least-loaded bin (ties: the first bin, the lowest item).

    The classic LPT rule: its makespan is within 4/3 of the best possible. Used for lanes here and
    for placing chains on a cluster's workers (:func:`dagtrain.execute.place.chain_workers`).
    """
    load = [0.0] * len(bins)
    out: dict[int, Bin] = {}
    for item in sorted(costs, key=lambda c: (-costs[c], c)):
        target = min(range(len(bins)), key=lambda i: (load[i], i))
        out[item] = bins[target]
        load[target] += costs[item]
    return out


def pack_lanes(g: nx.DiGraph, workers: int) -> nx.DiGraph:
    """Add the control edges that run ``g``'s chains as ``workers`` lanes (in place; returns ``g``)."""
    if workers <= 1 or not g.graph.get("chains_independent"):
        return g
    sync_steps = sorted({d["step"] for _, d in g.nodes(data=True) if d["kind"] == "sync"})
    intervals: dict[int, dict[int, list[str]]] = {}  # interval -> chain -> its ops there
    for key, d in g.nodes(data=True):
        if d.get("chain") is not None and d["step"] is not None:
            interval = bisect.bisect_right(sync_steps, d["step"])  # a sync at step b closes the steps before b
            intervals.setdefault(interval, {}).setdefault(d["chain"], []).append(key)
    for chains in intervals.values():
        work = {c: sum(g.nodes[k].get("cost", 0.0) for k in ops) for c, ops in chains.items()}
        lanes = longest_first(work, list(range(workers)))
        for lane in range(workers):
            members = sorted((c for c in work if lanes[c] == lane), key=lambda c: (-work[c], c))
            for a, b in itertools.pairwise(members):
                _order(g, chains[a], chains[b])
    g.graph["passes"] = [*g.graph.get("passes", []), "pack_lanes"]
    return g


def _order(g: nx.DiGraph, first: list[str], then: list[str]) -> None:
    """Control edges from the last ops of ``first`` (no successor among them) to the first ops of ``then``."""
    inside_first, inside_then = set(first), set(then)
    ends = [k for k in first if not any(s in inside_first for s in g.successors(k))]
    starts = [k for k in then if not any(p in inside_then for p in g.predecessors(k))]
    for u in ends:
        for v in starts:
            add_control(g, u, v, made_by="pack_lanes")
