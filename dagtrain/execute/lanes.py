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
every bit of the result) is unchanged. Each op of a lane is marked with its ``lane`` and
``interval``, and fusion (:mod:`dagtrain.execute.fuse`) makes one Dask task of a lane's
share of an interval (``lane0-3``): a lane hands over to Dask once an interval instead of
once a chain.

:func:`sync_per_lane` then removes the barrier task. A sync only passes the chains' latest
weights on, so each lane can run its own copy at the start of its next task
(``sync:s20@lane1``), reading the chains' results directly. Every interval then costs two
hand-overs in Dask's threaded scheduler instead of five (LayerLocal, 4 chains, 2 workers,
k = 10): 7-11% less wall time, measured (``docs/performance.md``). Values and bits are
unchanged; the copies are visible nodes, and the validator checks them like any sync.

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
    """Add the control edges that run ``g``'s chains as ``workers`` lanes (in place; returns ``g``).

    Each op of a lane gets the attributes ``lane`` (0..workers-1) and ``interval`` (which
    sync interval of the window it belongs to, from 0).
    """
    if workers <= 1 or not g.graph.get("chains_independent"):
        return g
    sync_steps = sorted({d["step"] for _, d in g.nodes(data=True) if d["kind"] == "sync"})
    intervals: dict[int, dict[int, list[str]]] = {}  # interval -> chain -> its ops there
    for key, d in g.nodes(data=True):
        if d.get("chain") is not None and d["step"] is not None:
            interval = bisect.bisect_right(sync_steps, d["step"])  # a sync at step b closes the steps before b
            intervals.setdefault(interval, {}).setdefault(d["chain"], []).append(key)
    for interval, chains in intervals.items():
        work = {c: sum(g.nodes[k].get("cost", 0.0) for k in ops) for c, ops in chains.items()}
        lanes = longest_first(work, list(range(workers)))
        for lane in range(workers):
            members = sorted((c for c in work if lanes[c] == lane), key=lambda c: (-work[c], c))
            for a, b in itertools.pairwise(members):
                _order(g, chains[a], chains[b])
            for c in members:
                for key in chains[c]:
                    g.nodes[key].update(lane=lane, interval=interval)
    g.graph["passes"] = [*g.graph.get("passes", []), "pack_lanes"]
    return g


def sync_per_lane(g: nx.DiGraph) -> nx.DiGraph:
    """Give each lane its own copy of every sync its ops read (in place; returns ``g``).

    The copy of ``sync:s20`` for lane 1 is ``sync:s20@lane1``: the same op with the same
    inputs, carrying ``lane`` and ``interval`` of the lane ops that read it, so fusion puts
    it into that lane's task. A sync that nothing but lanes reads is removed; one that
    the window's output, an evaluation or a later sync reads stays. Graphs without lanes
    (no ``pack_lanes``) come back unchanged.
    """
    if "pack_lanes" not in g.graph.get("passes", []) or not g.graph.get("chains_independent"):
        return g
    for sync in [k for k, d in g.nodes(data=True) if d["kind"] == "sync"]:
        readers: dict[int, list[tuple[str, dict[str, object]]]] = {}
        for _, v, d in g.out_edges(sync, data=True):
            if g.nodes[v].get("lane") is not None:
                readers.setdefault(g.nodes[v]["lane"], []).append((v, d))
        for lane, edges in sorted(readers.items()):
            copy = f"{sync}@lane{lane}"
            g.add_node(copy, **{**g.nodes[sync], "lane": lane, "interval": g.nodes[edges[0][0]]["interval"]})
            for u, _, d in g.in_edges(sync, data=True):
                g.add_edge(u, copy, **{**d, "made_by": "sync_per_lane"})
            for v, d in edges:
                g.remove_edge(sync, v)
                g.add_edge(copy, v, **{**d, "made_by": "sync_per_lane"})
        if readers and g.out_degree(sync) == 0:
            g.remove_node(sync)
    g.graph["passes"] = [*g.graph.get("passes", []), "sync_per_lane"]
    return g


def _order(g: nx.DiGraph, first: list[str], then: list[str]) -> None:
    """Control edges from the last ops of ``first`` (no successor among them) to the first ops of ``then``."""
    inside_first, inside_then = set(first), set(then)
    ends = [k for k in first if not any(s in inside_first for s in g.successors(k))]
    starts = [k for k in then if not any(p in inside_then for p in g.predecessors(k))]
    for u in ends:
        for v in starts:
            add_control(g, u, v, made_by="pack_lanes")
