"""``LayerLocal(k, data)``: the seed's approximation. Each layer trains in its own chain against
a stale snapshot of the other layers; every ``k`` steps a sync node merges the chains.

The schedule is three rewrites of the exact graph, each validated:

1. ``deal_to_chains``: one chain per layer. Chain ``c`` runs a step's forward through
   every layer, the backward from the top down to layer ``c``, and updates layer ``c``
   only. With ``data="shared"`` every chain runs every step; with ``data="sharded"`` step
   ``s`` goes to chain ``s mod L + 1`` only, so an epoch's work is split L ways. Every
   read still takes the latest version of each layer: in shared mode this graph computes
   exactly what Sync computes.
2. ``insert_syncs``: a sync node at the end of every interval of ``k`` steps (and at the
   end of the window) reads the latest version of every layer and passes it on as the
   snapshot. Reads of another chain's weights from an earlier interval now come through
   it. Still exact: a sync forwards values, it does not change them.
3. ``read_stale_snapshots``: the cut. Inside an interval, a chain reads the other layers
   from the snapshot taken at the interval's start (the last sync, or the window's input)
   instead of the other chains' latest updates. Between two syncs the chains now share no
   edge, so they can run at the same time. With k = 1 the snapshot is always the latest
   version, so LayerLocal(1, "shared") is exactly Sync.

Two optional corrections of the staleness follow as passes of their own:
``damp_stale_updates`` (``damping``) and ``predict_stale_weights`` (``compensate=True``,
a delay compensation by weight prediction: a chain reads another layer ``n`` of whose
updates it has missed as ``W_snapshot - n * lr * v_snapshot``, where ``v`` is that layer's
momentum at the snapshot; SpecTrain's rule, Chen et al. 2018).

A chain keeps its own weights and optimizer state: they never pass through a sync.
Intervals never cross a window, and windows start on interval boundaries, so each window
begins and ends with merged weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from dagtrain.errors import ConfigError
from dagtrain.graph.ir import add_control, add_data, add_op, inputs_of, op_key, producer_of, repoint
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP
from dagtrain.schedules.base import IntervalSchedule, Pass

DATA_MODES = ("shared", "sharded")
CHAIN_KINDS = ("load", "forward", "loss", "backward", "update")
READS_WEIGHTS = ("forward", "backward", "update")


@dataclass(frozen=True)
class LayerLocal(IntervalSchedule):
    """Layer-local updates against a stale snapshot, merged every ``k`` steps (the communication interval).

    ``data="shared"``: every layer chain trains on every batch. ``data="sharded"``: the
    batches are dealt out round-robin among the chains. ``damping``: staleness correction;
    an update ``tau`` steps after the interval's snapshot runs at ``lr / (1 + damping * tau)``
    (0, the default, is the seed's algorithm). ``compensate``: delay compensation; a chain
    predicts the other layers' current weights from their momentum at the snapshot (needs
    ``momentum > 0``).
    """

    data: str = "shared"
    damping: float = 0.0
    compensate: bool = False
    name = "layerlocal"

    def __post_init__(self) -> None:
        self._check_k()
        if self.data not in DATA_MODES:
            raise ConfigError(f"LayerLocal data = {self.data!r} is not a data mode; choose 'shared' (every chain "
                              "trains on every batch) or 'sharded' (batches dealt out among the chains)")
        if isinstance(self.damping, bool) or not isinstance(self.damping, int | float) or not self.damping >= 0 \
                or self.damping == float("inf"):
            raise ConfigError(f"LayerLocal damping = {self.damping!r} must be a finite number >= 0 "
                              "(0: no staleness correction), e.g. damping=0.1")
        if not isinstance(self.compensate, bool):
            raise ConfigError(f"LayerLocal compensate = {self.compensate!r} must be True or False")

    def __str__(self) -> str:
        damping = f", damping={self.damping}" if self.damping else ""
        compensate = ", compensate=True" if self.compensate else ""
        return f"LayerLocal(k={self.k}, data={self.data!r}{damping}{compensate})"

    # --- how the run is cut: windows on interval boundaries, one task per chain per interval ---
    def n_chains(self, model: MLP) -> int:
        """One chain per layer."""
        return model.n_layers

    def canonical_window(self, window: Window, model: MLP) -> Window:
        """Sharded dealing depends on the window's first step modulo the number of layers."""
        phase = window.step0 % model.n_layers if self.data == "sharded" else 0
        return Window(0, 0, phase, 0, window.n_steps, window.evaluate)

    def shape_key(self, window: Window, model: MLP) -> Hashable:
        """Windows with the same canonical window share a program."""
        return self.canonical_window(window, model)

    def chains_at(self, step: int, n_layers: int) -> range:
        """The chains (1-based layers) that train on the batch of ``step``."""
        if self.data == "shared":
            return range(1, n_layers + 1)
        c = step % n_layers + 1
        return range(c, c + 1)

    def rewrites(self) -> tuple[Pass, ...]:
        """Deal the steps to per-layer chains, insert sync nodes, cut to stale snapshots (then damp and predict, if asked)."""
        passes: tuple[Pass, ...] = (self.deal_to_chains, self.insert_syncs, self.read_stale_snapshots)
        return passes + ((self.damp_stale_updates,) if self.damping else ()) + \
            ((self.predict_stale_weights,) if self.compensate else ())

    def missed_updates(self, layer: int, start: int, step: int, n_layers: int) -> int:
        """How many updates of ``layer`` happen at steps ``start .. step - 1`` (what a chain's snapshot of it misses)."""
        return sum(1 for t in range(start, step) if layer in self.chains_at(t, n_layers))

    def staleness_scale(self, step: int, interval_start: int) -> float:
        """The learning-rate factor of an update at ``step``: ``1 / (1 + damping * (step - interval_start))``."""
        return 1.0 / (1.0 + self.damping * (step - interval_start))

    # --- pass 1 ---
    def deal_to_chains(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Replace each step's ops by per-layer chains that read the latest version of every layer."""
        return deal(g, model, lambda step: [(c, c, {}) for c in self.chains_at(step, model.n_layers)], "deal_to_chains")

    # --- pass 2 ---
    def insert_syncs(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Add a sync node at the end of every interval; cross-chain reads from earlier intervals go through it."""
        w: Window = g.graph["window"]
        L = model.n_layers
        latest = {j: (op_key("input", step=w.step0), f"params/L{j}") for j in range(1, L + 1)}
        syncs = {}
        for a in range(w.step0, w.stop, self.k):
            b = min(a + self.k, w.stop)
            for step in range(a, b):
                for c in self.chains_at(step, L):
                    latest[c] = (op_key("update", layer=c, step=step, chain=c), "params")
            sync = add_op(g, "sync", step=b)
            syncs[b] = sync
            for j, (src, field) in latest.items():
                add_data(g, src, sync, (field, f"params/L{j}"), made_by="insert_syncs")
        for key, d in list(g.nodes(data=True)):
            if d["kind"] in READS_WEIGHTS:
                src, field = producer_of(g, key, "params")
                s = g.nodes[src]
                start = self.interval_start(d["step"], w)
                if s["kind"] == "update" and s["chain"] != d["chain"] and s["step"] < start:
                    repoint(g, key, "params", syncs[start], f"snapshot/L{d['layer']}", made_by="insert_syncs")
            elif d["kind"] in ("output", "eval"):
                for port, _, _ in inputs_of(g, key):
                    if port.startswith("params/"):
                        repoint(g, key, port, syncs[w.stop], port.replace("params", "snapshot"), made_by="insert_syncs")
        # A sync no chain reads from (every sync but the last of a one-layer model: its one chain keeps its own
        # weights) still runs, in order: it is a sync point, where the weights are checked for divergence.
        bounds = sorted(syncs)
        for a, b in itertools.pairwise(bounds):
            if g.out_degree(syncs[a]) == 0:
                add_control(g, syncs[a], syncs[b], made_by="insert_syncs")
        return g

    # --- pass 3: the approximation ---
    def read_stale_snapshots(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Inside an interval, read the other layers from the interval's starting snapshot: the cut."""
        w: Window = g.graph["window"]
        for key, d in list(g.nodes(data=True)):
            if d["kind"] not in READS_WEIGHTS:
                continue
            src, _ = producer_of(g, key, "params")
            s = g.nodes[src]
            if s["kind"] == "update" and s["chain"] != d["chain"]:
                start = self.interval_start(d["step"], w)
                snapshot = (op_key("input", step=start), f"params/L{d['layer']}") if start == w.step0 else \
                    (op_key("sync", step=start), f"snapshot/L{d['layer']}")
                repoint(g, key, "params", *snapshot, made_by="read_stale_snapshots")
        g.graph["chains_independent"] = True  # the validator now holds the chains to it (rule 6)
        return g

    # --- pass 4 (optional): staleness correction ---
    def damp_stale_updates(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Scale each update's learning rate down by how many steps its view of the other layers is old."""
        w: Window = g.graph["window"]
        for _, d in g.nodes(data=True):
            if d["kind"] == "update":
                d["lr_scale"] = self.staleness_scale(d["step"], self.interval_start(d["step"], w))
        return g


    # --- pass 5 (optional): delay compensation ---
    def predict_stale_weights(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Each stale read also takes the layer's momentum at the snapshot, and the count of updates it has missed.

        A sync passes on each layer's velocity beside its weights; a forward or backward op that
        reads another chain's layer from a snapshot gets ``predict_steps`` (the missed updates)
        and a ``velocity`` port, and runs with ``W - predict_steps * lr * v``.
        """
        w: Window = g.graph["window"]
        for key, d in list(g.nodes(data=True)):
            if d["kind"] == "sync":
                for port, src, field in inputs_of(g, key):
                    if port.startswith("params/"):
                        velocity = "velocity" if g.nodes[src]["kind"] == "update" else field.replace("params", "velocity")
                        add_data(g, src, key, (velocity, port.replace("params", "velocity")), made_by="predict_stale_weights")
        for key, d in list(g.nodes(data=True)):
            if d["kind"] not in ("forward", "backward") or d["layer"] == d["chain"]:
                continue
            src, field = producer_of(g, key, "params")
            if g.nodes[src]["kind"] not in ("input", "sync"):
                continue
            start = self.interval_start(d["step"], w)
            missed = self.missed_updates(d["layer"], start, d["step"], model.n_layers)
            if missed:
                d["predict_steps"] = missed
                add_data(g, src, key, (field.replace("snapshot", "velocity").replace("params", "velocity"), "velocity"),
                         made_by="predict_stale_weights")
        return g


ChainAssignment = Callable[[int], list[tuple[int, int, dict[str, Any]]]]


def deal(g: nx.DiGraph, model: MLP, assign: ChainAssignment, made_by: str) -> nx.DiGraph:
    """Replace each step's ops by layer chains that read the latest version of every layer (an exact pass).

    ``assign(step)`` gives ``(chain, layer, attrs)`` for every chain that trains on the step: chain
    ``chain`` runs the forward, the backward down to ``layer`` and the update of ``layer``; its
    ops get ``attrs`` and the key suffix ``:c{chain}``.
    """
    w: Window = g.graph["window"]
    L = model.n_layers
    h = nx.DiGraph(**g.graph)
    for key, d in g.nodes(data=True):
        if d["kind"] not in CHAIN_KINDS:
            h.add_node(key, **d)
    inp = op_key("input", step=w.step0)
    latest = {j: (inp, f"params/L{j}", f"velocity/L{j}") for j in range(1, L + 1)}
    first_loss: dict[int, str] = {}
    ops_of_step: dict[int, list[str]] = {}
    for key, d in g.nodes(data=True):
        if d["kind"] in CHAIN_KINDS:
            ops_of_step.setdefault(d["step"], []).append(key)
    for step in range(w.step0, w.stop):
        step_ops = ops_of_step[step]
        updated = {}
        for chain, c, attrs in assign(step):
            kept = {k: _chain_key(k, chain) for k in step_ops if _in_chain(g.nodes[k], c)}
            for k, new in kept.items():
                d = dict(g.nodes[k], chain=chain, **attrs)
                if d["kind"] == "backward" and d["layer"] == c:  # nothing below needs its input gradient
                    d.update(input_grad=False, cost=model.layer_flops(c, g.graph["batch_size"]))
                elif d["kind"] == "backward":  # a layer above: the chain only passes the gradient through it
                    d.update(weight_grad=False, cost=model.layer_flops(d["layer"], g.graph["batch_size"]))
                h.add_node(new, **d)
            for k, new in kept.items():
                for port, src, field in inputs_of(g, k):
                    if src in kept:
                        add_data(h, kept[src], new, (field, port), made_by=made_by)
                    else:  # a weight read: the latest version of the layer, whoever made it
                        layer = g.nodes[k]["layer"]
                        source = latest[layer][1] if port == "params" else latest[layer][2]
                        add_data(h, latest[layer][0], new, (source, port), made_by=made_by)
            updated[c] = (op_key("update", layer=c, step=step, chain=chain), "params", "velocity")
            first_loss.setdefault(step, op_key("loss", step=step, chain=chain))
        latest.update(updated)  # versions made at this step are read from the next step on
    for sink in [k for k, d in h.nodes(data=True) if d["kind"] in ("output", "eval")]:
        for port, _, _ in inputs_of(g, sink):
            kind, _, rest = port.partition("/")
            if kind in ("params", "velocity"):
                layer = int(rest[1:])
                src, pf, vf = latest[layer]
                add_data(h, src, sink, (pf if kind == "params" else vf, port), made_by=made_by)
            elif kind == "loss":  # the loss of a step (numbered within the window) as its first chain saw it
                add_data(h, first_loss[w.step0 + int(rest)], sink, ("loss", port), made_by=made_by)
            else:
                src, field = producer_of(g, sink, port)
                add_data(h, src, sink, (field, port), made_by=made_by)
    return h


def _in_chain(d: dict[str, object], chain: int) -> bool:
    """Chain ``chain`` keeps the step's load, forward and loss, backward down to its layer, and its update."""
    kind, layer = d["kind"], d["layer"]
    if kind == "backward":
        return isinstance(layer, int) and layer >= chain
    if kind == "update":
        return layer == chain
    return True


def _chain_key(key: str, chain: int) -> str:
    return f"{key}:c{chain}"
