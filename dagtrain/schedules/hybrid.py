"""``Hybrid(LayerLocal(k), LocalSGD(k2, R))``: model replicas, each trained layer-locally, in one graph.

R replicas take the batches in turn (step ``s`` goes to replica ``s mod R + 1``); inside a
replica, L layer chains train as in LayerLocal on that replica's own steps, against the
replica's snapshot of the other layers. Every ``k`` steps a per-replica sync
(``sync:s40:r2``) merges a replica's layer chains into its next snapshot; every ``k2``
steps (a multiple of k) one sync (``sync:s80``) averages every replica's weights and
momentum, and every chain starts again from the average. Chains are numbered
``(replica - 1) * L + layer``.

Two validated passes over the exact graph:

1. ``deal_to_replica_chains``: LayerLocal's dealing (``layerlocal.deal``) with the replica's
   own step count choosing the layer chains in sharded mode. Exact: every read still takes
   the latest version of every layer.
2. ``sync_and_average``: the cut. A chain reads its own layer from its own updates since the
   last average (or from that average), and the other layers from its replica's snapshot at
   the interval's start; the syncs are added as above.

``Hybrid(LayerLocal(k, d), LocalSGD(k2, 1))`` is ``LayerLocal(k, d)`` bit for bit, and
``Hybrid(LayerLocal(1, "shared"), LocalSGD(k2, R))`` is ``LocalSGD(k2, R)`` bit for bit.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import networkx as nx

from dagtrain.errors import ConfigError
from dagtrain.graph.ir import add_data, inputs_of, op_key, repoint
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP
from dagtrain.schedules.base import Pass, Schedule
from dagtrain.schedules.layerlocal import LayerLocal, deal
from dagtrain.schedules.localsgd import LocalSGD

Source = tuple[str, str, str | None]  # (node, params field, velocity field or None)


@dataclass(frozen=True)
class Hybrid(Schedule):
    """LocalSGD replicas whose layers each train layer-locally; layer syncs every ``local.k``, averages every ``replicas.k``."""

    local: LayerLocal = field(default_factory=lambda: LayerLocal(10, "sharded"))
    replicas: LocalSGD = field(default_factory=lambda: LocalSGD(20, 2))
    name = "hybrid"

    def __post_init__(self) -> None:
        if not isinstance(self.local, LayerLocal) or not isinstance(self.replicas, LocalSGD):
            raise ConfigError("Hybrid takes a LayerLocal and a LocalSGD, e.g. Hybrid(LayerLocal(10, 'sharded'), "
                              "LocalSGD(20, 2))")
        if self.local.damping:
            raise ConfigError("Hybrid does not apply LayerLocal's damping yet; use damping=0")
        if self.local.compensate:
            raise ConfigError("Hybrid does not apply LayerLocal's delay compensation yet; use compensate=False")
        if self.replicas.k % self.local.k:
            raise ConfigError(f"Hybrid: LocalSGD k = {self.replicas.k} must be a multiple of LayerLocal k = "
                              f"{self.local.k}, so replicas are averaged where their layers sync")

    def __str__(self) -> str:
        return f"Hybrid({self.local}, {self.replicas})"

    @property
    def k(self) -> int:
        """The layer-sync interval."""
        return self.local.k

    def n_chains(self, model: MLP) -> int:
        """One chain per layer per replica."""
        return self.replicas.replicas * model.n_layers

    def check(self, model: MLP, total_steps: int) -> None:
        """Both intervals must fit in the run."""
        self.replicas.check(model, total_steps)

    def align_window_steps(self, window_steps: int) -> int:
        """A multiple of the averaging interval: every window starts and ends with an average."""
        return self.replicas.align_window_steps(window_steps)

    def segment_steps(self, requested: int | None, default: int) -> int:
        """A chain's layer-sync interval is one task."""
        return self.local.segment_steps(requested, default)

    def canonical_window(self, window: Window, model: MLP) -> Window:
        """Dealing depends on the window's first step modulo R (times L when sharded)."""
        period = self.replicas.replicas * (model.n_layers if self.local.data == "sharded" else 1)
        return Window(0, 0, window.step0 % period, 0, window.n_steps, window.evaluate)

    def shape_key(self, window: Window, model: MLP) -> Hashable:
        """Windows with the same canonical window share a program."""
        return self.canonical_window(window, model)

    def sync_steps(self, window: Window, model: MLP) -> list[int]:
        """Every layer-sync point (averages fall on some of them)."""
        return self.local.sync_steps(window, model)

    def assign(self, step: int, n_layers: int) -> list[tuple[int, int, dict[str, int]]]:
        """``(chain, layer, attrs)`` of the chains that train on ``step``."""
        R = self.replicas.replicas
        r = self.replicas.replica_of(step)
        return [((r - 1) * n_layers + c, c, {"replica": r}) for c in self.local.chains_at(step // R, n_layers)]

    def rewrites(self) -> tuple[Pass, ...]:
        """Deal to (replica, layer) chains, then sync and average."""
        return (self.deal_to_replica_chains, self.sync_and_average)

    # --- pass 1 ---
    def deal_to_replica_chains(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Each step's ops go to its replica's layer chains; every read still takes the latest version."""
        h = deal(g, model, lambda step: self.assign(step, model.n_layers), "deal_to_replica_chains")
        h.graph["chain_role"] = "replica x layer"
        return h

    # --- pass 2: the approximation ---
    def sync_and_average(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Chains read their own updates and their replica's snapshot; per-replica syncs every k, averages every k2."""
        w: Window = g.graph["window"]
        L, R, k, made = model.n_layers, self.replicas.replicas, self.local.k, "sync_and_average"
        inp = op_key("input", step=w.step0)
        average: Source = (inp, "params/L{j}", "velocity/L{j}")  # where the last average (or the input) is
        snapshot = {r: average for r in range(1, R + 1)}  # each replica's snapshot of its layers
        own: dict[tuple[int, int], str] = {}  # (replica, layer) -> its chain's last update since the average
        for a in range(w.step0, w.stop, k):
            b = min(a + k, w.stop)
            for step in range(a, b):
                for chain, c, attrs in self.assign(step, L):
                    r = attrs["replica"]
                    for key in _ops_of(g, step, chain, c):
                        d = g.nodes[key]
                        j = d["layer"]
                        if j == c:
                            src = own.get((r, c))
                            params = (src, "params", "velocity") if src else average
                        else:
                            params = snapshot[r]
                        repoint(g, key, "params", params[0], params[1].format(j=j), made_by=made)
                        if d["kind"] == "update":
                            assert params[2] is not None
                            repoint(g, key, "velocity", params[0], params[2].format(j=j), made_by=made)
                    own[(r, c)] = op_key("update", layer=c, step=step, chain=chain)
            if (b - w.step0) % self.replicas.k == 0 or b == w.stop:
                sync = f"sync:s{b}"
                g.add_node(sync, kind="sync", layer=None, step=b, chain=None, epoch=None, part=None, cost=0.0, replicas=R)
                for r in range(1, R + 1):
                    for j in range(1, L + 1):
                        src = own.get((r, j))
                        node, pf, vf = (src, "params", "velocity") if src else average
                        add_data(g, node, sync, (pf.format(j=j), f"params/L{j}/r{r}"),
                                 (str(vf).format(j=j), f"velocity/L{j}/r{r}"), made_by=made)
                average = (sync, "snapshot/L{j}", "velocity/L{j}")
                snapshot = {r: average for r in range(1, R + 1)}
                own.clear()
            else:
                trains_next = {self.replicas.replica_of(s) for s in range(b, min(b + k, w.stop))}
                for r in sorted(trains_next):  # a replica that sits out the next interval needs no snapshot yet
                    sync = f"sync:s{b}:r{r}"
                    g.add_node(sync, kind="sync", layer=None, step=b, chain=None, epoch=None, part=None, cost=0.0,
                               replica=r)
                    for j in range(1, L + 1):
                        src = own.get((r, j))
                        node, pf, _ = (src, "params", None) if src else average
                        add_data(g, node, sync, (pf.format(j=j), f"params/L{j}"), made_by=made)
                    snapshot[r] = (sync, "snapshot/L{j}", None)
        for key, d in list(g.nodes(data=True)):
            if d["kind"] in ("output", "eval"):
                for port, _, _ in inputs_of(g, key):
                    if port.startswith(("params/", "velocity/")):
                        repoint(g, key, port, average[0], port.replace("params/", "snapshot/"), made_by=made)
        g.graph["chains_independent"] = True
        return g


def _ops_of(g: nx.DiGraph, step: int, chain: int, layer: int) -> list[str]:
    """The weight-reading ops of ``chain`` (which trains ``layer``) at ``step``: its forwards, backwards and update."""
    L = g.graph["n_layers"]
    keys = [op_key("forward", layer=j, step=step, chain=chain) for j in range(1, L + 1)]
    keys += [op_key("backward", layer=j, step=step, chain=chain) for j in range(layer, L + 1)]
    return [*keys, op_key("update", layer=layer, step=step, chain=chain)]
