"""The fine task graph: a ``networkx.DiGraph`` of ops, built without running anything.

Nodes are ops with stable, printable keys::

    in:s0          the weights (and optimizer state) entering a window
    load:s17       read the batch of step 17 from the store
    fwd:L2:s17     forward through layer 2 at step 17
    loss:s17       loss and its gradient wrt the logits
    bwd:L2:s17     backward through layer 2
    upd:L2:s17     optimizer step of layer 2 (produces weight version 18 of layer 2)
    sync:s20       merge of every chain's latest weights into a new snapshot
    eval:e0:p1     test loss and accuracy sums over part 1 of the test chunks, end of epoch 0
    eval:e0        the parts' sums combined into the epoch's test loss and accuracy
    out:s20        the state leaving the window

Schedules whose chains repeat an op add the chain, e.g. ``fwd:L2:s17:c1``.

Node attributes: ``kind``, ``layer`` (1-based or None), ``step`` (absolute training step
or None), ``chain`` (None for the single chain of Sync), ``cost`` (estimated flops).

Edge attributes: ``kind`` is ``"data"`` or ``"control"``; a data edge's ``bind`` is a
tuple of ``(field, port)`` pairs: the producer's output ``field`` becomes the consumer's
input ``port``. A control edge binds nothing and only orders two ops. ``made_by`` names
the pass that made the edge.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

KINDS = ("input", "load", "forward", "loss", "backward", "update", "sync", "eval", "output")
PREFIX = {"input": "in", "load": "load", "forward": "fwd", "loss": "loss", "backward": "bwd",
          "update": "upd", "sync": "sync", "eval": "eval", "output": "out"}
DATA, CONTROL = "data", "control"


def op_key(kind: str, *, layer: int | None = None, step: int | None = None,
           chain: int | None = None, epoch: int | None = None, part: int | None = None) -> str:
    """The stable text key of an op, e.g. ``op_key("forward", layer=2, step=17) == "fwd:L2:s17"``."""
    parts = [PREFIX[kind]]
    if layer is not None:
        parts.append(f"L{layer}")
    if step is not None:
        parts.append(f"s{step}")
    if epoch is not None:
        parts.append(f"e{epoch}")
    if chain is not None:
        parts.append(f"c{chain}")
    if part is not None:
        parts.append(f"p{part}")
    return ":".join(parts)


def add_op(g: nx.DiGraph, kind: str, *, layer: int | None = None, step: int | None = None,
           chain: int | None = None, epoch: int | None = None, part: int | None = None, cost: float = 0.0,
           **attrs: Any) -> str:
    """Add an op node to ``g`` and return its key."""
    if kind not in KINDS:
        raise ValueError(f"unknown op kind {kind!r}; known: {KINDS}")
    key = op_key(kind, layer=layer, step=step, chain=chain, epoch=epoch, part=part)
    g.add_node(key, kind=kind, layer=layer, step=step, chain=chain, epoch=epoch, part=part, cost=float(cost), **attrs)
    return key


def add_data(g: nx.DiGraph, src: str, dst: str, *bind: tuple[str, str], made_by: str) -> None:
    """Add a data edge: each ``(field, port)`` in ``bind`` feeds ``src``'s field to ``dst``'s port."""
    if g.has_edge(src, dst) and g.edges[src, dst]["kind"] == DATA:
        g.edges[src, dst]["bind"] = g.edges[src, dst]["bind"] + tuple(bind)
    else:
        g.add_edge(src, dst, kind=DATA, bind=tuple(bind), made_by=made_by)


def add_control(g: nx.DiGraph, src: str, dst: str, *, made_by: str) -> None:
    """Add a control edge: ``dst`` may start only after ``src`` has finished; no value flows."""
    if not g.has_edge(src, dst):
        g.add_edge(src, dst, kind=CONTROL, bind=(), made_by=made_by)


def inputs_of(g: nx.DiGraph, key: str) -> list[tuple[str, str, str]]:
    """The ``(port, producer, field)`` triples that feed ``key``, sorted by port."""
    found = [(port, src, field) for src, _, d in g.in_edges(key, data=True) for field, port in d["bind"]]
    return sorted(found)


def unbind(g: nx.DiGraph, dst: str, port: str) -> None:
    """Disconnect ``dst``'s input ``port`` from whatever feeds it (the edge goes when it binds nothing else)."""
    for old, _, d in list(g.in_edges(dst, data=True)):
        kept = tuple(b for b in d["bind"] if b[1] != port)
        if len(kept) != len(d["bind"]):
            if kept:
                d["bind"] = kept
            else:
                g.remove_edge(old, dst)


def repoint(g: nx.DiGraph, dst: str, port: str, src: str, field: str, *, made_by: str) -> None:
    """Make ``dst``'s input ``port`` read ``src``'s ``field`` instead of whatever fed it before."""
    unbind(g, dst, port)
    add_data(g, src, dst, (field, port), made_by=made_by)


def producer_of(g: nx.DiGraph, dst: str, port: str) -> tuple[str, str]:
    """The ``(producer, field)`` feeding ``dst``'s input ``port``."""
    for src, _, d in g.in_edges(dst, data=True):
        for field, p in d["bind"]:
            if p == port:
                return src, field
    raise KeyError(f"{dst} has no input port {port!r}")
