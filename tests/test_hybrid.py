"""Hybrid: LocalSGD replicas trained layer-locally, in one graph; each degenerate case is its parent exactly."""

from __future__ import annotations

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.graph.ir import producer_of
from dagtrain.graph.window import Window
from dagtrain.reference import train_reference_layerlocal, train_reference_localsgd
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=3)  # three layers
KW = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9}


@pytest.mark.parametrize("local", [dt.LayerLocal(2, "shared"), dt.LayerLocal(3, "sharded")], ids=str)
def test_one_replica_is_layerlocal_exactly(blobs: dt.Dataset, local: dt.LayerLocal) -> None:
    hybrid = dt.Hybrid(local, dt.LocalSGD(local.k * 2, 1))
    result = dt.compile(MODEL, blobs, hybrid, **KW).run("sync")
    assert weights_equal(result.weights, train_reference_layerlocal(MODEL, blobs, local, **KW))


def test_layer_syncs_every_step_in_shared_mode_is_localsgd_exactly(blobs: dt.Dataset) -> None:
    replicas = dt.LocalSGD(4, 2)
    result = dt.compile(MODEL, blobs, dt.Hybrid(dt.LayerLocal(1, "shared"), replicas), **KW).run("threads")
    assert weights_equal(result.weights, train_reference_localsgd(MODEL, blobs, replicas, **KW))


def test_chains_replica_syncs_and_averages() -> None:
    hybrid = dt.Hybrid(dt.LayerLocal(2, "shared"), dt.LocalSGD(4, 2))
    g = hybrid.build(MODEL, Window(0, 0, 0, 0, 8, evaluate=True), batch_size=4)
    assert g.graph["chains_independent"]
    assert {d["chain"] for _, d in g.nodes(data=True) if d["kind"] == "update"} == set(range(1, 7))  # 2 replicas x 3
    assert "sync:s2:r1" in g and "sync:s2:r2" in g and "sync:s4" in g and "sync:s4:r1" not in g
    # Step 2 is replica 1's; its chain for layer 1 (chain 1) reads layer 2 from replica 1's snapshot at step 2 ...
    assert producer_of(g, "fwd:L2:s2:c1", "params") == ("sync:s2:r1", "snapshot/L2")
    # ... and its own layer from its own update at step 0 (replica 1 trained steps 0 and 2).
    assert producer_of(g, "fwd:L1:s2:c1", "params") == ("upd:L1:s0:c1", "params")
    assert producer_of(g, "sync:s4", "params/L3/r2") == ("upd:L3:s3:c6", "params")
    assert producer_of(g, "fwd:L1:s4:c1", "params") == ("sync:s4", "snapshot/L1")  # after an average: the average
    interval = g.subgraph(k for k, d in g.nodes(data=True) if d["chain"] is not None and 4 <= (d["step"] or 0) < 6)
    assert nx.number_weakly_connected_components(interval) == 6


def test_hybrid_runs_deterministically_and_learns(blobs: dt.Dataset) -> None:
    plan = dt.compile(MODEL, blobs, dt.Hybrid(dt.LayerLocal(3, "sharded"), dt.LocalSGD(6, 2)), **{**KW, "momentum": 0.0})
    plan.validate()
    a, b = plan.run("sync"), plan.run("threads")
    assert weights_equal(a.weights, b.weights)
    assert a.test_accuracy is not None and a.test_accuracy > 0.9
    tasks = {t.name for t in plan.program(plan.windows[0]).tasks}
    assert {"chain1-0", "chain4-0", "sync-s3-r1", "sync-s3-r2", "sync-s6"} <= tasks


@pytest.mark.parametrize("bad, match", [
    ({"replicas": dt.LocalSGD(5, 1)}, "LocalSGD k = 5 must be a multiple of LayerLocal k = 10"),
    ({"local": dt.LayerLocal(10, damping=0.1)}, "does not apply LayerLocal's damping"),
    ({"local": dt.LocalSGD(10, 2)}, "Hybrid takes a LayerLocal and a LocalSGD"),
])
def test_bad_settings_are_refused(bad: dict[str, object], match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.Hybrid(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("hybrid", [dt.Hybrid(dt.LayerLocal(3, "sharded"), dt.LocalSGD(6, 2)),
                                    dt.Hybrid(dt.LayerLocal(2, "shared"), dt.LocalSGD(8, 2))], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_graph_equals_the_plain_hybrid_loop(blobs: dt.Dataset, hybrid: dt.Hybrid, momentum: float) -> None:
    from dagtrain.reference import train_reference_hybrid

    kw = {**KW, "momentum": momentum}
    result = dt.compile(MODEL, blobs, hybrid, **kw).run("threads")
    assert weights_equal(result.weights, train_reference_hybrid(MODEL, blobs, hybrid, **kw))
