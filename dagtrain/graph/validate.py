"""Rules every task graph must keep. Runs after every pass, so a broken rewrite fails where it broke.

Each violation is collected; one :class:`GraphError` lists them all, numbered by rule.

1. The graph is acyclic (the cycle is spelled out when not).
2. Every node has a known kind; every edge is data (binding at least one field) or control.
3. Every input port of an op is fed by exactly one producer.
4. Every op receives the ports its kind needs.
5. Every op can reach an output or eval node (nothing computed for nobody).
6. Once a pass declares the chains independent (``g.graph["chains_independent"]``), no data
   edge joins the ops of two different chains: between syncs they share nothing. (A control
   edge may: ``pack_lanes`` orders chains that share a worker, and no value flows.)
7. Every sync reads every layer, and each from that layer's last update before the sync
   (or, if the layer did not change since, from the previous sync or the window's input).
   A sync that averages replicas (attribute ``replicas``) reads each layer from each
   replica, each from that replica's last update of the layer; a sync of one replica
   (attribute ``replica``) counts only that replica's updates.
"""

from __future__ import annotations

import bisect

import networkx as nx

from dagtrain.errors import GraphError
from dagtrain.graph.ir import CONTROL, DATA, KINDS

REQUIRED_PORTS = {
    "load": set(),
    "forward": {"x", "params"},
    "loss": {"logits", "y"},
    "backward": {"cache", "grad", "params"},
    "update": {"params", "velocity", "grads"},
}


def validate(g: nx.DiGraph, *, where: str = "graph") -> nx.DiGraph:
    """Check ``g`` against the rules above; return it unchanged or raise one GraphError listing all violations."""
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        problems.append("rule 1 (acyclic): cycle " + " -> ".join([u for u, _ in cycle] + [cycle[0][0]]))
    for key, d in g.nodes(data=True):
        if d.get("kind") not in KINDS:
            problems.append(f"rule 2 (kinds): node {key} has kind {d.get('kind')!r}")
    feeders: dict[str, dict[str, list[str]]] = {key: {} for key in g}
    for u, v, d in g.edges(data=True):
        if d.get("kind") == DATA and not d.get("bind"):
            problems.append(f"rule 2 (edges): data edge {u} -> {v} binds no field")
        elif d.get("kind") not in (DATA, CONTROL):
            problems.append(f"rule 2 (edges): edge {u} -> {v} has kind {d.get('kind')!r}")
        for _, port in d.get("bind", ()):
            feeders[v].setdefault(port, []).append(u)
    for key, d in g.nodes(data=True):
        for port, producers in feeders[key].items():
            if len(producers) > 1:
                problems.append(f"rule 3 (one producer): {key} port {port!r} is fed by {len(producers)} producers: {producers}")
        missing = REQUIRED_PORTS.get(d.get("kind", ""), set()) - set(feeders[key])
        if missing:
            problems.append(f"rule 4 (ports): {key} ({d.get('kind')}) gets no {sorted(missing)}")
    if g.number_of_nodes() and not problems:
        sinks = [k for k, d in g.nodes(data=True) if d.get("kind") in ("output", "eval")]
        live, stack = set(sinks), list(sinks)
        while stack:  # everything upstream of a sink, in one backward sweep
            for u in g.pred[stack.pop()]:
                if u not in live:
                    live.add(u)
                    stack.append(u)
        dead = [k for k in g if k not in live]
        if dead:
            problems.append(f"rule 5 (reachable): {len(dead)} ops reach no output, e.g. {dead[:5]}")
    if g.graph.get("chains_independent"):
        for u, v, kind in g.edges(data="kind"):
            cu, cv = g.nodes[u].get("chain"), g.nodes[v].get("chain")
            if cu is not None and cv is not None and cu != cv and kind == DATA:
                problems.append(f"rule 6 (chains independent): {u} (chain {cu}) feeds {v} (chain {cv}) without a sync")
    problems += _check_syncs(g, feeders)
    if problems:
        listing = "\n  ".join(problems)
        raise GraphError(f"{where} breaks {len(problems)} rule(s):\n  {listing}")
    return g


def _check_syncs(g: nx.DiGraph, feeders: dict[str, dict[str, list[str]]]) -> list[str]:
    """Rule 7: a sync reads layer j from j's last update before it, or from a node no update of j came after."""
    syncs = [(d["step"], k) for k, d in g.nodes(data=True) if d.get("kind") == "sync"]
    if not syncs:
        return []
    n_layers = g.graph.get("n_layers") or max(d.get("layer") or 0 for _, d in g.nodes(data=True))
    updates: dict[int, list[tuple[int, str]]] = {}
    for key, d in g.nodes(data=True):
        if d.get("kind") == "update":
            updates.setdefault(d["layer"], []).append((d["step"], key))
    for found in updates.values():
        found.sort()
    by_replica: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for layer, found in updates.items():
        for step, key in found:
            node = g.nodes[key]
            by_replica.setdefault((layer, node.get("replica", node.get("chain"))), []).append((step, key))
    problems = []
    for step, sync in sorted(syncs):
        replicas, own = g.nodes[sync].get("replicas"), g.nodes[sync].get("replica")
        for layer in range(1, n_layers + 1):
            for replica in range(1, replicas + 1) if replicas else (None,):
                port = f"params/L{layer}" if replica is None else f"params/L{layer}/r{replica}"
                replica = replica or own  # a replica's own sync reads only that replica's updates
                fed = feeders[sync].get(port)
                if not fed:
                    problems.append(f"rule 7 (syncs): {sync} does not read layer {layer}"
                                    + ("" if replica is None else f" of replica {replica}"))
                    continue
                found = updates.get(layer, []) if replica is None else by_replica.get((layer, replica), [])
                i = bisect.bisect_left(found, (step, ""))  # updates before the sync: found[:i]
                last = found[i - 1] if i else None
                src = g.nodes[fed[0]]
                stale = (last is not None and last[1] != fed[0]) if src.get("kind") == "update" else \
                    (last is not None and last[0] >= (src.get("step") or 0))
                if stale:
                    what = f"layer {layer}" if replica is None else f"layer {layer} of replica {replica}"
                    problems.append(f"rule 7 (syncs): {sync} reads {what} from {fed[0]}, "
                                    f"not from its last update {last[1] if last else None}")
    return problems
