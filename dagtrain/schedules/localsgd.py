"""``LocalSGD(k, replicas)``: data parallelism with periodic model averaging (DistBelief, local SGD).

R replicas of the whole model each train on their own share of the batches; every ``k``
steps a sync node averages their weights (and momentum) into the snapshot every replica
starts the next interval from. Three rewrites of the exact graph, each validated:

1. ``deal_to_replicas``: step ``s`` goes to replica ``s mod R + 1`` (its ops get the chain
   attribute and a ``:c{r}`` key). Only labels change: still exact.
2. ``insert_averages``: a sync node at the end of every interval reads the latest version
   of every layer; reads from an earlier interval, and the window's output and evaluation,
   now come through it. Still exact: with one input per layer a sync forwards it.
3. ``train_replicas_apart``: the cut. Inside an interval each replica reads only its own
   updates (or the interval's starting snapshot), and each sync reads every replica's last
   update of every layer and averages them. Replicas share no edge between syncs.

``replicas=1`` is exactly Sync for any k. With ``k = replicas`` every replica takes one
step from the same snapshot and the average is synchronous data-parallel SGD on R times
the batch (with momentum too, since the momentum buffers are averaged as well). k must
be a multiple of R so every replica trains the same number of steps per interval.
Reference: Dean et al., "Large Scale Distributed Deep Networks" (2012); Stich, "Local SGD
Converges Fast and Communicates Little" (2019).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import networkx as nx

from dagtrain.errors import ConfigError
from dagtrain.graph.ir import add_data, add_op, inputs_of, op_key, producer_of, repoint, unbind
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP
from dagtrain.schedules.base import IntervalSchedule, Pass

REPLICATED = ("load", "forward", "loss", "backward", "update")
READS_STATE = {"forward": ("params",), "backward": ("params",), "update": ("params", "velocity")}


@dataclass(frozen=True)
class LocalSGD(IntervalSchedule):
    """R model replicas train on their own batches and are averaged every ``k`` steps."""

    replicas: int = 2
    name = "localsgd"

    def __post_init__(self) -> None:
        self._check_k()
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas <= 0:
            raise ConfigError(f"LocalSGD replicas = {self.replicas!r} must be a positive integer, "
                              "e.g. LocalSGD(k=10, replicas=2)")
        if self.k % self.replicas:
            nearest = self.k // self.replicas * self.replicas or self.replicas
            raise ConfigError(f"LocalSGD k = {self.k} must be a multiple of replicas = {self.replicas}, so every "
                              f"replica trains k / replicas steps per interval; e.g. k = {nearest}")

    def __str__(self) -> str:
        return f"LocalSGD(k={self.k}, replicas={self.replicas})"

    def n_chains(self, model: MLP) -> int:
        """One chain per replica."""
        return self.replicas

    def canonical_window(self, window: Window, model: MLP) -> Window:
        """Dealing depends on the window's first step modulo the number of replicas."""
        return Window(0, 0, window.step0 % self.replicas, 0, window.n_steps, window.evaluate)

    def shape_key(self, window: Window, model: MLP) -> Hashable:
        """Windows with the same canonical window share a program."""
        return self.canonical_window(window, model)

    def replica_of(self, step: int) -> int:
        """The replica (1-based) that trains on the batch of ``step``."""
        return step % self.replicas + 1

    def rewrites(self) -> tuple[Pass, ...]:
        """Deal steps to replicas, insert the averaging syncs, then cut the replicas apart."""
        return (self.deal_to_replicas, self.insert_averages, self.train_replicas_apart)

    # --- pass 1 ---
    def deal_to_replicas(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Label each step's ops with the replica that will run them (keys get ``:c{r}``); no edge changes."""
        mapping = {}
        for key, d in g.nodes(data=True):
            if d["kind"] in REPLICATED:
                d["chain"] = self.replica_of(d["step"])
                mapping[key] = f"{key}:c{d['chain']}"
        h = nx.relabel_nodes(g, mapping, copy=True)
        h.graph["chain_role"] = "replica"  # how pictures and tables name a chain
        return h

    # --- pass 2 ---
    def insert_averages(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """A sync at every interval end reads each layer's latest version; later intervals read through it."""
        w: Window = g.graph["window"]
        L = model.n_layers
        inp = op_key("input", step=w.step0)
        latest = {j: inp for j in range(1, L + 1)}
        updates = _updates_by_step(g)
        syncs = {}
        for a in range(w.step0, w.stop, self.k):
            b = min(a + self.k, w.stop)
            for step in range(a, b):
                for j in range(1, L + 1):
                    latest[j] = updates[(j, step)]
            sync = add_op(g, "sync", step=b)
            syncs[b] = sync
            for j, src in latest.items():
                fields = ("params", "velocity") if src != inp else (f"params/L{j}", f"velocity/L{j}")
                add_data(g, src, sync, (fields[0], f"params/L{j}"), (fields[1], f"velocity/L{j}"), made_by="insert_averages")
        for key, d in list(g.nodes(data=True)):
            if d["kind"] in READS_STATE:
                start = self.interval_start(d["step"], w)
                for port in READS_STATE[d["kind"]]:
                    src, _ = producer_of(g, key, port)
                    if g.nodes[src]["kind"] == "update" and g.nodes[src]["step"] < start:
                        field = f"snapshot/L{d['layer']}" if port == "params" else f"velocity/L{d['layer']}"
                        repoint(g, key, port, syncs[start], field, made_by="insert_averages")
            elif d["kind"] in ("output", "eval"):
                for port, _, _ in inputs_of(g, key):
                    if port.startswith(("params/", "velocity/")):
                        field = port.replace("params/", "snapshot/")
                        repoint(g, key, port, syncs[w.stop], field, made_by="insert_averages")
        return g

    # --- pass 3: the approximation ---
    def train_replicas_apart(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Each replica reads only its own updates inside an interval; each sync averages every replica's last update."""
        w: Window = g.graph["window"]
        L = model.n_layers
        updates = _updates_by_step(g)
        for a in range(w.step0, w.stop, self.k):
            b = min(a + self.k, w.stop)
            start = (op_key("input", step=w.step0), "params/L{j}", "velocity/L{j}") if a == w.step0 else \
                (op_key("sync", step=a), "snapshot/L{j}", "velocity/L{j}")
            own: dict[tuple[int, int], str | None] = {(r, j): None for r in range(1, self.replicas + 1) for j in range(1, L + 1)}
            for step in range(a, b):
                r = self.replica_of(step)
                for j in range(1, L + 1):
                    src = own[(r, j)]
                    for kind in READS_STATE:
                        key = op_key(kind, layer=j, step=step) + f":c{r}"
                        for port in READS_STATE[kind]:
                            if src is None:
                                field = (start[1] if port == "params" else start[2]).format(j=j)
                                repoint(g, key, port, start[0], field, made_by="train_replicas_apart")
                            else:
                                repoint(g, key, port, src, port, made_by="train_replicas_apart")
                for j in range(1, L + 1):
                    own[(r, j)] = updates[(j, step)]
            sync = op_key("sync", step=b)
            for port, _, _ in inputs_of(g, sync):
                unbind(g, sync, port)
            g.nodes[sync]["replicas"] = self.replicas
            for r in range(1, self.replicas + 1):
                for j in range(1, L + 1):
                    src = own[(r, j)]
                    if src is None:  # a replica that trained no step this interval contributes the snapshot
                        add_data(g, start[0], sync, (start[1].format(j=j), f"params/L{j}/r{r}"),
                                 (start[2].format(j=j), f"velocity/L{j}/r{r}"), made_by="train_replicas_apart")
                    else:
                        add_data(g, src, sync, ("params", f"params/L{j}/r{r}"), ("velocity", f"velocity/L{j}/r{r}"),
                                 made_by="train_replicas_apart")
        g.graph["chains_independent"] = True
        return g


def _updates_by_step(g: nx.DiGraph) -> dict[tuple[int, int], str]:
    return {(d["layer"], d["step"]): key for key, d in g.nodes(data=True) if d["kind"] == "update"}
