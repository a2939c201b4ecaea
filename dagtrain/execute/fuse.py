"""The fusion pass: group fine ops into Dask tasks coarse enough that overhead stays small.

A task runs a segment of a chain: ``segment_steps`` consecutive steps of forward, loss,
backward and update ops, executed in order inside one Python call. Under Sync the loads
of a segment form their own task, so reading the next batches overlaps with computing
these; a layer chain (``LayerLocal``) reads its own batches inside its task, so on a
cluster no batch crosses between workers. A pipeline stage (``DelayedGradient``) splits
each step into a forward task and a backward-and-update task. Ops packed into lanes
(:mod:`dagtrain.execute.lanes`, a local scheduler with several workers) are fused per lane
and sync interval instead, whatever ``segment_steps`` says: one task per lane per interval,
with that lane's copies of the syncs it reads. Keys: ``train-3``, ``load-3``, ``chain2-3``,
``chain1-f3``, ``chain1-b3``, ``lane0-3``, ``sync-s40``, ``eval-p1``, ``eval``.
The mapping fine op -> task is kept on each node (attribute ``task``).
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from dagtrain.errors import GraphError

TRAIN_KINDS = frozenset({"forward", "loss", "backward", "update"})


def task_of(d: dict[str, Any], step0: int, segment_steps: int) -> str:
    """The task a fine op with attributes ``d`` belongs to (a readable Dask key prefix)."""
    kind = d["kind"]
    if kind == "input":
        return "in"
    if kind == "output":
        return "out"
    if kind == "eval":
        return "eval" if d.get("part") is None else f"eval-p{d['part']}"
    if d.get("lane") is not None:  # a lane's share of a sync interval, its copies of the syncs it reads included
        return f"lane{d['lane']}-{d['interval']}"
    if kind == "sync":  # one replica's own sync (Hybrid) is its own task, so replicas never wait for each other
        return f"sync-s{d['step'] - step0}" + (f"-r{d['replica']}" if d.get("replica") is not None else "")
    segment = (d["step"] - step0) // segment_steps
    if d.get("phase") is not None:  # a pipeline stage: its forward and its backward of a step are separate tasks
        return f"chain{d['chain']}-{d['phase']}{segment}"
    if d.get("chain") is not None:  # a layer chain reads its own batches: no array crosses between chains
        return f"chain{d['chain']}-{segment}"
    role = "load" if kind == "load" else "train"
    return f"{role}-{segment}"


def fuse(g: nx.DiGraph, step0: int, segment_steps: int) -> nx.DiGraph:
    """Mark each node of ``g`` with its task; return the task graph (tasks and their dependencies).

    Raises GraphError if grouping would make the task graph cyclic (a non-convex group).
    """
    if segment_steps <= 0:
        raise GraphError(f"segment_steps = {segment_steps} must be positive")
    tasks = nx.DiGraph()
    for key, d in g.nodes(data=True):
        d["task"] = task_of(d, step0, segment_steps)
        if d["task"] not in tasks:
            tasks.add_node(d["task"], ops=[], cost=0.0)
        tasks.nodes[d["task"]]["ops"].append(key)
        tasks.nodes[d["task"]]["cost"] += d.get("cost", 0.0)
    for u, v in g.edges:
        tu, tv = g.nodes[u]["task"], g.nodes[v]["task"]
        if tu != tv:
            tasks.add_edge(tu, tv)
    if not nx.is_directed_acyclic_graph(tasks):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(tasks))
        raise GraphError(f"fusion made the task graph cyclic: {cycle}; use smaller segments")
    return tasks
