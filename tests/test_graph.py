"""The fine graph: keys, edges, the validator's rules, analysis and fusion, all without running."""

from __future__ import annotations

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.analysis import analyze, critical_path
from dagtrain.execute.fuse import fuse
from dagtrain.graph import Window, add_control, build_exact, inputs_of, validate

MODEL = dt.MLP([12, 8, 6, 3], seed=0)
WINDOW = Window(index=0, epoch=0, step0=10, batch0=10, n_steps=3, evaluate=True)


@pytest.fixture
def g() -> nx.DiGraph:
    return build_exact(MODEL, WINDOW, batch_size=4)


def test_keys_and_kinds(g: nx.DiGraph) -> None:
    assert {"load:s10", "fwd:L1:s10", "fwd:L3:s12", "loss:s11", "bwd:L2:s12", "upd:L3:s12", "in:s10",
            "out:s13", "eval:e0"} <= set(g)
    kinds = nx.get_node_attributes(g, "kind")
    assert sum(k == "forward" for k in kinds.values()) == 3 * 3
    assert (g.nodes["bwd:L2:s11"]["layer"], g.nodes["bwd:L2:s11"]["step"]) == (2, 11)


def test_every_edge_names_what_it_carries(g: nx.DiGraph) -> None:
    assert inputs_of(g, "fwd:L2:s11") == [("params", "upd:L2:s10", "params"), ("x", "fwd:L1:s11", "out")]
    assert inputs_of(g, "upd:L1:s10") == [("grads", "bwd:L1:s10", "grads"), ("params", "in:s10", "params/L1"),
                                          ("velocity", "in:s10", "velocity/L1")]
    assert {d["kind"] for _, _, d in g.edges(data=True)} == {"data"}
    assert {d["made_by"] for _, _, d in g.edges(data=True)} == {"build_exact"}


def test_step_waits_for_the_previous_update_only_through_weights(g: nx.DiGraph) -> None:
    path = nx.shortest_path(g, "upd:L3:s10", "fwd:L1:s11") if nx.has_path(g, "upd:L3:s10", "fwd:L1:s11") else None
    assert path is None  # layer 1's forward at s11 does not need layer 3's update at s10 ...
    assert nx.has_path(g, "upd:L3:s10", "fwd:L3:s11")  # ... layer 3's forward does


def test_exact_graph_is_valid_and_sequential(g: nx.DiGraph) -> None:
    validate(g)
    stats = analyze(g)
    assert stats.ops["forward"] == 9 and stats.ops["update"] == 9 and stats.ops["load"] == 3
    # Exact SGD is one chain: nearly all work lies on the critical path.
    assert stats.parallelism < 1.2
    path, span = critical_path(g)
    assert path[0] in {"in:s10", "load:s10"} and span == pytest.approx(stats.span)


def test_validator_spells_out_a_cycle(g: nx.DiGraph) -> None:
    add_control(g, "upd:L1:s12", "fwd:L1:s10", made_by="test")
    with pytest.raises(dt.GraphError, match=r"rule 1 \(acyclic\): cycle .*fwd:L1:s10.*upd:L1:s12"):
        validate(g, where="after pass test")


def test_validator_collects_every_violation(g: nx.DiGraph) -> None:
    g.remove_edge("fwd:L1:s11", "fwd:L2:s11")  # fwd:L2:s11 loses its input x
    g.add_edge("fwd:L1:s10", "fwd:L2:s11", kind="data", bind=(("out", "params"),), made_by="test")  # 2nd params
    g.add_node("fwd:L9:s0", kind="forwardish")
    with pytest.raises(dt.GraphError) as err:
        validate(g)
    text = str(err.value)
    assert "rule 2 (kinds)" in text and "rule 3 (one producer): fwd:L2:s11 port 'params'" in text
    assert "rule 4 (ports): fwd:L2:s11 (forward) gets no ['x']" in text


def test_validator_finds_dead_ops(g: nx.DiGraph) -> None:
    g.add_node("load:s99", kind="load", layer=None, step=99, chain=None, cost=0.0)
    with pytest.raises(dt.GraphError, match=r"rule 5 \(reachable\): 1 ops reach no output, e.g. \['load:s99'\]"):
        validate(g)


def test_fusion_groups_segments_and_keeps_loads_apart(g: nx.DiGraph) -> None:
    tasks = fuse(g, step0=10, segment_steps=2)
    assert g.nodes["fwd:L2:s11"]["task"] == "train-0" and g.nodes["upd:L1:s12"]["task"] == "train-1"
    assert g.nodes["load:s12"]["task"] == "load-1"
    assert set(tasks) == {"in", "load-0", "load-1", "train-0", "train-1", "out", "eval-p0", "eval"}
    assert list(nx.topological_sort(tasks.subgraph(["train-0", "train-1"]))) == ["train-0", "train-1"]
    assert not nx.has_path(tasks, "load-1", "train-0")  # loads can run ahead
    assert sum(len(d["ops"]) for _, d in tasks.nodes(data=True)) == g.number_of_nodes()


def test_plan_graph_and_summary_without_running(blobs: dt.Dataset) -> None:
    plan = dt.compile(dt.MLP([12, 16, 3], seed=0), blobs, batch_size=32, epochs=2, segment_steps=4, window_steps=8)
    assert [w.n_steps for w in plan.windows] == [8, 8, 3] * 2 and plan.total_steps == 38
    assert [w.evaluate for w in plan.windows] == [False, False, True] * 2
    g = plan.graph(1)
    assert "fwd:L1:s8" in g and "fwd:L1:s7" not in g
    text = plan.summary()
    # Each of the 2 evaluations: one part per test chunk (7 chunks of 32) plus the combining node.
    assert "ops:   backward 76, eval 16" in text and "forward 76" in text and "update 76" in text
    assert "critical path" in text and "width" in text and "edges: data" in text
    with pytest.raises(dt.ConfigError, match="window 6 does not exist"):
        plan.graph(6)
