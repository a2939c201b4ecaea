"""LocalSGD: replicas trained apart and averaged every k steps; exact where it must be, equal to its plain loop."""

from __future__ import annotations

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.graph.ir import producer_of
from dagtrain.graph.window import Window
from dagtrain.reference import train_reference, train_reference_localsgd
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=3)
KW = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9}


def replica_graph(k: int, replicas: int, n_steps: int = 8) -> nx.DiGraph:
    return dt.LocalSGD(k, replicas).build(MODEL, Window(0, 0, 0, 0, n_steps, evaluate=True), batch_size=4)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_one_replica_is_exactly_sync(blobs: dt.Dataset, k: int) -> None:
    """With one replica every average is of one model: Sync's weights, bit for bit, for any k."""
    result = dt.compile(MODEL, blobs, dt.LocalSGD(k, 1), **KW).run("sync")
    assert weights_equal(result.weights, train_reference(MODEL, blobs, **KW))


@pytest.mark.parametrize("k", [2, 6])
def test_passes_before_the_cut_are_exact(blobs: dt.Dataset, k: int) -> None:
    """Dealing to replicas and inserting the syncs change no value: only the cut approximates."""
    exact = dt.LocalSGD(k, 2, skip=frozenset({"train_replicas_apart"}))
    result = dt.compile(MODEL, blobs, exact, segment_steps=1, **KW).run("sync")
    assert weights_equal(result.weights, train_reference(MODEL, blobs, **KW))


@pytest.mark.parametrize("schedule", [dt.LocalSGD(2, 2), dt.LocalSGD(8, 2), dt.LocalSGD(9, 3)], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_graph_equals_the_plain_localsgd_loop(blobs: dt.Dataset, schedule: dt.LocalSGD, momentum: float) -> None:
    kw = {**KW, "momentum": momentum}
    result = dt.compile(MODEL, blobs, schedule, **kw).run("threads")
    expected = train_reference_localsgd(MODEL, blobs, schedule, **kw)
    assert weights_equal(result.weights, expected)
    assert not weights_equal(result.weights, train_reference(MODEL, blobs, **kw))  # the cut changed something
    assert result.test_accuracy is not None and result.test_accuracy > 0.9


def test_replicas_share_nothing_between_syncs_and_syncs_average_every_replica() -> None:
    g = replica_graph(4, 2)
    assert g.graph["chains_independent"]
    # Step 7 (replica 2) reads layer 1 from replica 2's own update at step 5, not from step 6 (replica 1) ...
    assert producer_of(g, "fwd:L1:s7:c2", "params") == ("upd:L1:s5:c2", "params")
    # ... and the interval's first step of each replica reads the snapshot of the sync before it.
    assert producer_of(g, "fwd:L1:s4:c1", "params") == ("sync:s4", "snapshot/L1")
    assert producer_of(g, "upd:L1:s4:c1", "velocity") == ("sync:s4", "velocity/L1")
    assert producer_of(g, "sync:s8", "params/L2/r1") == ("upd:L2:s6:c1", "params")
    assert producer_of(g, "sync:s8", "velocity/L2/r2") == ("upd:L2:s7:c2", "velocity")
    chains = {d["chain"] for _, d in g.nodes(data=True) if d["kind"] == "forward"}
    assert chains == {1, 2}
    interval = g.subgraph(k for k, d in g.nodes(data=True) if d["chain"] is not None and 4 <= (d["step"] or 0) < 8)
    assert nx.number_weakly_connected_components(interval) == 2


def test_validator_catches_a_sync_that_skips_a_replica() -> None:
    from dagtrain.graph.ir import repoint
    from dagtrain.graph.validate import validate

    g = replica_graph(4, 2)
    repoint(g, "sync:s8", "params/L3/r2", "upd:L3:s5:c2", "params", made_by="a bad pass")
    with pytest.raises(dt.GraphError, match=r"rule 7 \(syncs\): sync:s8 reads layer 3 of replica 2 from upd:L3:s5:c2, "
                                            r"not from its last update upd:L3:s7:c2"):
        validate(g)


def test_each_replica_interval_is_one_task_and_runs_alongside_the_other(blobs: dt.Dataset) -> None:
    plan = dt.compile(MODEL, blobs, dt.LocalSGD(8, 2), **KW)
    names = {t.name for t in plan.program(plan.windows[0]).tasks}
    assert {"chain1-0", "chain2-0", "sync-s8"} <= names
    analysis = plan.analyze(workers=2)
    assert analysis.formula_seconds is not None and analysis.predicted_seconds < plan.analyze(workers=1).predicted_seconds
    assert plan.actions()["chain1"][:3] == ["load:s0:c1", "fwd:L1:s0:c1", "fwd:L2:s0:c1"]


@pytest.mark.parametrize("bad, match", [
    ({"k": 0}, "LocalSGD k = 0 must be a positive integer"),
    ({"k": 2, "replicas": 0}, "replicas = 0 must be a positive integer"),
    ({"k": 5, "replicas": 2}, "k = 5 must be a multiple of replicas = 2"),
    ({"k": 1.5}, "LocalSGD k = 1.5 must be a positive integer"),
])
def test_bad_settings_are_refused(bad: dict[str, object], match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.LocalSGD(**bad)  # type: ignore[arg-type]


def test_picture_and_schedule_table_name_the_replicas(blobs: dt.Dataset, tmp_path: object) -> None:
    from pathlib import Path

    plan = dt.compile(MODEL, blobs, dt.LocalSGD(4, 2), **KW)
    svg = plan.draw(Path(str(tmp_path)) / "interval.svg").read_text()
    assert "chain 1 (replica 1)" in svg and "chain 2 (replica 2)" in svg and "sync:s4" in svg
    table = plan.schedule_table(2)
    assert "lane0-0" in table and "lane1-0" in table and "lane0-1" in table  # each lane syncs inside its next task
