"""LayerLocal: the rewrite passes one by one, the structure they promise, and what they compute."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import dagtrain as dt
from dagtrain.graph.ir import add_control, inputs_of, producer_of
from dagtrain.graph.window import Window
from dagtrain.reference import train_reference, train_reference_layerlocal
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=3)  # three layers, so three chains
KW = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9}


def chain_graph(k: int, data: str = "shared", n_steps: int = 10, step0: int = 0) -> nx.DiGraph:
    return dt.LayerLocal(k, data).build(MODEL, Window(0, 0, step0, step0, n_steps, evaluate=True), batch_size=4)


def test_k1_shared_is_exactly_sync(blobs: dt.Dataset) -> None:
    """With k = 1 the snapshot is always the latest version: the same weights as Sync, bit for bit."""
    sync = dt.compile(MODEL, blobs, **KW).run("sync")
    local = dt.compile(MODEL, blobs, dt.LayerLocal(1, "shared"), **KW).run("sync")
    assert weights_equal(local.weights, sync.weights)
    assert weights_equal(local.weights, train_reference(MODEL, blobs, **KW))
    assert local.history[-1]["test_accuracy"] == sync.history[-1]["test_accuracy"]


@pytest.mark.parametrize("k", [2, 5, 40])
def test_passes_before_the_cut_are_exact(blobs: dt.Dataset, k: int) -> None:
    """Dealing to chains and inserting syncs change no value: only the cut (pass 3) approximates."""
    sync = dt.compile(MODEL, blobs, **KW).run("sync")
    # Before the cut chains still read each other every step, so they fuse one step per task.
    exact_chains = dt.LayerLocal(k, "shared", skip=frozenset({"read_stale_snapshots"}))
    exact = dt.compile(MODEL, blobs, exact_chains, segment_steps=1, **KW).run("sync")
    cut = dt.compile(MODEL, blobs, dt.LayerLocal(k, "shared"), **KW).run("sync")
    assert weights_equal(exact.weights, sync.weights)
    assert not weights_equal(cut.weights, sync.weights)


@pytest.mark.parametrize("data", ["shared", "sharded"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_chains_share_no_edge_between_syncs(k: int, data: str) -> None:
    """Between consecutive syncs no path leads from one chain's ops to another's (networkx proves it)."""
    g = chain_graph(k, data, n_steps=11)
    between = g.subgraph([n for n, d in g.nodes(data=True) if d["chain"] is not None])
    for component in nx.weakly_connected_components(between):
        chains = {g.nodes[n]["chain"] for n in component}
        assert len(chains) == 1, f"ops of chains {chains} are connected without a sync"
    syncs = sorted((d["step"], n) for n, d in g.nodes(data=True) if d["kind"] == "sync")
    assert [s for s, _ in syncs] == sorted({min(s + k, 11) for s in range(0, 11, k)})
    for (a, _), (b, _) in zip([(0, "in:s0"), *syncs], syncs, strict=False):
        ops = {c: [n for n, d in g.nodes(data=True) if d["chain"] == c and a <= d["step"] < b] for c in (1, 2, 3)}
        for c1 in ops:
            for c2 in ops:
                if c1 != c2 and ops[c1] and ops[c2]:
                    reach = set().union(*(nx.descendants(between, n) for n in ops[c1]))
                    assert not reach & set(ops[c2])


def test_each_chain_updates_its_layer_against_the_snapshot() -> None:
    g = chain_graph(4, "shared", n_steps=8)
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    assert kinds.count("sync") == 2 and kinds.count("update") == 8 * 3
    # Chain 2 at step 5: forward through all three layers, backward down to layer 2 only.
    assert {n for n in g if n.endswith(":s5:c2")} == {
        "load:s5:c2", "fwd:L1:s5:c2", "fwd:L2:s5:c2", "fwd:L3:s5:c2", "loss:s5:c2",
        "bwd:L3:s5:c2", "bwd:L2:s5:c2", "upd:L2:s5:c2"}
    assert g.nodes["bwd:L2:s5:c2"]["input_grad"] is False
    # Layer 3 is fixed for chain 2: it only passes the gradient down (no weight gradient, half the flops).
    assert g.nodes["bwd:L3:s5:c2"]["weight_grad"] is False and g.nodes["bwd:L2:s5:c2"].get("weight_grad", True)
    assert g.nodes["bwd:L3:s5:c2"]["cost"] == MODEL.layer_flops(3, 4)
    assert not [v for _, v, p in g.out_edges("bwd:L3:s5:c2", data="bind") if ("grads", "grads") in p]
    # Other layers come from the sync that opened the interval (step 4); its own layer from its own last update.
    assert producer_of(g, "fwd:L1:s5:c2", "params") == ("sync:s4", "snapshot/L1")
    assert producer_of(g, "fwd:L3:s5:c2", "params") == ("sync:s4", "snapshot/L3")
    assert producer_of(g, "fwd:L2:s5:c2", "params") == ("upd:L2:s4:c2", "params")
    assert producer_of(g, "fwd:L3:s1:c2", "params") == ("in:s0", "params/L3")
    # Each sync reads every layer's last update; the window's output takes the last sync.
    assert sorted(inputs_of(g, "sync:s8")) == [(f"params/L{j}", f"upd:L{j}:s7:c{j}", "params") for j in (1, 2, 3)]
    assert producer_of(g, "out:s8", "params/L2") == ("sync:s8", "snapshot/L2")
    assert producer_of(g, "out:s8", "velocity/L2") == ("upd:L2:s7:c2", "velocity")
    assert g.graph["passes"] == ["build_exact", "deal_to_chains", "insert_syncs", "read_stale_snapshots"]


def test_sharded_deals_each_batch_to_one_chain() -> None:
    g = chain_graph(5, "sharded", n_steps=10, step0=7)
    loads = sorted((d["step"], d["chain"]) for _, d in g.nodes(data=True) if d["kind"] == "load")
    assert loads == [(s, s % 3 + 1) for s in range(7, 17)]
    updates = [d for _, d in g.nodes(data=True) if d["kind"] == "update"]
    assert all(d["layer"] == d["chain"] for d in updates) and len(updates) == 10


def test_tasks_one_per_chain_per_interval(blobs: dt.Dataset) -> None:
    """A chain's k steps (loads included) are one Dask task; the chains of an interval can run at once."""
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(5, "shared"), batch_size=16, epochs=1)
    assert plan.window_steps % 5 == 0 and plan.segment_steps == 5
    tasks = plan.task_graph(0)
    chain_tasks = sorted(t for t in tasks if t.startswith("chain"))
    n_intervals = -(-plan.windows[0].n_steps // 5)
    assert len(chain_tasks) == 3 * n_intervals
    # Per step: load, 3 forwards, loss, backwards from layer 3 down to the chain's layer, one update.
    assert [len(tasks.nodes[f"chain{c}-0"]["ops"]) for c in (1, 2, 3)] == [5 * 9, 5 * 8, 5 * 7]
    first = ["chain1-0", "chain2-0", "chain3-0"]
    assert all(not nx.has_path(tasks, a, b) for a in first for b in first if a != b)
    # Its own next interval, the sync, and the output (which reports the losses chain 1 saw).
    assert set(tasks.successors("chain1-0")) == {"chain1-1", "sync-s5", "out"}


def test_sharded_trains_and_is_deterministic_across_windows(blobs: dt.Dataset) -> None:
    """Sharded windows start at different chain phases; cutting the run into windows changes nothing."""
    plan_kw = dict(KW, epochs=2)
    a = dt.compile(MODEL, blobs, dt.LayerLocal(3, "sharded"), window_steps=6, **plan_kw).run("sync")
    b = dt.compile(MODEL, blobs, dt.LayerLocal(3, "sharded"), window_steps=30, **plan_kw).run("threads")
    assert weights_equal(a.weights, b.weights)
    assert a.test_accuracy is not None and a.test_accuracy > 0.9
    assert a.samples == 2 * 600


def test_bad_layerlocal_settings_name_the_value_and_fix(blobs: dt.Dataset) -> None:
    for k in (0, -3, 2.5, True):
        with pytest.raises(dt.ConfigError, match=r"k = .* must be a positive integer"):
            dt.LayerLocal(k)  # type: ignore[arg-type]
    with pytest.raises(dt.ConfigError, match="data = 'split' is not a data mode; choose 'shared'"):
        dt.LayerLocal(5, "split")
    with pytest.raises(dt.ConfigError, match=r"k = 1000 is larger than the 38 steps of the run.*use k <= 38"):
        dt.compile(MODEL, blobs, dt.LayerLocal(1000), batch_size=16, epochs=1)
    with pytest.raises(dt.ConfigError, match="segment_steps = 3 must divide LayerLocal k = 10"):
        dt.compile(MODEL, blobs, dt.LayerLocal(10), batch_size=16, segment_steps=3)


def test_mid_run_stop_and_epoch_ends_are_syncs(blobs: dt.Dataset) -> None:
    """Intervals restart at each epoch and the run's last step: every window ends with merged weights."""
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(7, "shared"), batch_size=16, epochs=2, max_steps=50)
    windows = plan.windows
    assert all(w.batch0 % 7 == 0 for w in windows)
    assert [w.evaluate for w in windows].count(True) == 2
    result = plan.run("sync")
    assert result.steps == 50 and len(result.history) == 2
    assert np.isfinite(result.history[-1]["train_loss"])


@pytest.mark.parametrize("schedule", [dt.LayerLocal(3, "shared"), dt.LayerLocal(7, "sharded"), dt.LayerLocal(2, "sharded")],
                         ids=str)
def test_layerlocal_equals_the_plain_loop_of_the_algorithm(blobs: dt.Dataset, schedule: dt.LayerLocal) -> None:
    """The rewritten graph computes what the seed's algorithm, written as a plain loop, computes: bit for bit."""
    kw = dict(KW, max_steps=60)
    result = dt.compile(MODEL, blobs, schedule, **kw).run("threads")
    assert weights_equal(result.weights, train_reference_layerlocal(MODEL, blobs, schedule, **kw))


@pytest.mark.cluster
def test_chains_stay_on_their_worker_on_a_cluster(blobs: dt.Dataset, local_cluster: object) -> None:
    """On a LocalCluster chain c runs only on worker (c - 1) mod W; the weights equal the local run's."""
    schedule = dt.LayerLocal(5, "sharded")
    plan = dt.compile(MODEL, blobs, schedule, **KW)
    result = plan.run(local_cluster)
    placement = result.info["placement"]
    # Chain 1 (the whole backward pass) alone on one worker; chains 2 and 3 share the other.
    costs = plan.chain_costs()
    assert costs[1] > costs[2] > costs[3]
    assert len(set(placement.values())) == 2 and placement[2] == placement[3] != placement[1]
    chain_tasks = [r for r in result.tasks if r.prefix.startswith("chain")]
    assert len(chain_tasks) == len([t for w in plan.windows for t in plan.task_graph(w.index) if t.startswith("chain")])
    for r in chain_tasks:
        assert r.worker.startswith(placement[int(r.prefix[5:])] + "/"), r
    # Weights move only at syncs: a chain task fetches at most one input from another worker,
    # and only from a worker that ran a sync or the window's input, never another chain's task.
    feeders = {r.worker.rsplit("/", 1)[0] for r in result.tasks if r.prefix in ("sync", "in")}
    for r in chain_tasks:
        assert len(r.transfers) <= 1 and set(r.transfers) <= feeders, r
    assert any(r.transfers for r in chain_tasks)  # the snapshot does cross at syncs
    assert weights_equal(result.weights, plan.run("sync").weights)


def test_threaded_scheduler_runs_the_chains_of_an_interval_at_once(blobs: dt.Dataset) -> None:
    """From the run's own task records: the lane tasks of an interval (one chain each here) overlap in time on two threads."""
    model = dt.MLP([12, 256, 256, 3], seed=0)
    result = dt.compile(model, blobs, dt.LayerLocal(19, "shared"), batch_size=16, epochs=2).run("threads")
    by_interval: dict[str, list[tuple[float, float]]] = {}
    for r in result.tasks:
        if r.prefix.startswith("lane"):
            by_interval.setdefault(r.key.split("-", 1)[1], []).append((r.start, r.stop))
    overlapping = [spans for spans in by_interval.values()
                   if any(a[0] < b[1] and b[0] < a[1] for a in spans for b in spans if a is not b)]
    assert len(by_interval) == 4 and len(overlapping) >= 3
    assert len({r.worker for r in result.tasks if r.prefix.startswith("lane")}) == 2


def test_chains_need_a_worker_to_run_on() -> None:
    from dagtrain.execute.place import chain_workers

    assert chain_workers(["tcp://b:1", "tcp://a:2"], 3) == {1: "tcp://a:2", 2: "tcp://b:1", 3: "tcp://a:2"}
    # With costs: heaviest first to the least-loaded worker (801 | 535 + 405 ... as in a 4-layer net).
    costs = {1: 801.0, 2: 535.0, 3: 405.0, 4: 337.0}
    assert chain_workers(["w0", "w1"], 4, costs) == {1: "w0", 2: "w1", 3: "w1", 4: "w0"}
    with pytest.raises(dt.ConfigError, match="no workers to place the layer chains on"):
        chain_workers([], 2)


def test_passes_are_listed_skipped_added_and_inspectable(blobs: dt.Dataset) -> None:
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(4), batch_size=16)
    assert plan.passes == ["build_exact", "deal_to_chains", "insert_syncs", "read_stale_snapshots", "pack_lanes",
                           "sync_per_lane", "fuse"]
    before_cut = plan.graph_before("read_stale_snapshots")
    assert before_cut.graph["passes"] == ["build_exact", "deal_to_chains", "insert_syncs"]
    assert producer_of(before_cut, "fwd:L1:s5:c2", "params") == ("upd:L1:s4:c1", "params")  # the latest, not stale
    assert producer_of(plan.graph(0), "fwd:L1:s5:c2", "params") == ("sync:s4", "snapshot/L1")
    assert "sync:s4" not in plan.graph_before("insert_syncs")
    assert plan.graph_before("fuse").number_of_nodes() == plan.graph(0).number_of_nodes()

    def tag_syncs(g: nx.DiGraph, model: dt.MLP) -> nx.DiGraph:
        for _, d in g.nodes(data=True):
            if d["kind"] == "sync":
                d["tagged"] = True
        return g

    custom = dt.LayerLocal(4, skip=frozenset({"read_stale_snapshots"}), extra=(("insert_syncs", tag_syncs),))
    assert custom.passes() == ["build_exact", "deal_to_chains", "insert_syncs", "tag_syncs"]
    g = custom.build(MODEL, Window(0, 0, 0, 0, 8, True), batch_size=4)
    assert g.nodes["sync:s4"]["tagged"] and producer_of(g, "fwd:L1:s5:c2", "params") == ("upd:L1:s4:c1", "params")
    with pytest.raises(dt.ConfigError, match=r"no pass named 'cut'.*deal_to_chains, insert_syncs"):
        dt.LayerLocal(4, skip=frozenset({"cut"})).passes()
    with pytest.raises(dt.ConfigError, match="no pass named 'nope' runs on a built graph"):
        plan.graph_before("nope")


def test_validator_holds_chains_and_syncs_to_their_rules() -> None:
    from dagtrain.graph.ir import add_data, repoint
    from dagtrain.graph.validate import validate

    g = chain_graph(4, "shared", n_steps=8)
    add_data(g, "fwd:L1:s5:c1", "fwd:L2:s6:c2", ("out", "extra"), made_by="a bad pass")
    with pytest.raises(dt.GraphError, match=r"rule 6 \(chains independent\): fwd:L1:s5:c1 \(chain 1\) feeds fwd:L2:s6:c2"):
        validate(g)
    g = chain_graph(4, "shared", n_steps=8)
    repoint(g, "sync:s8", "params/L3", "upd:L3:s5:c3", "params", made_by="a bad pass")
    with pytest.raises(dt.GraphError, match=r"rule 7 \(syncs\): sync:s8 reads layer 3 from upd:L3:s5:c3, not from its "
                                            r"last update upd:L3:s7:c3"):
        validate(g)


def test_explain_names_the_path_or_says_there_is_none(blobs: dt.Dataset) -> None:
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(4), batch_size=16)
    assert plan.explain("upd:L1:s1:c1", "fwd:L2:s2:c2") == "fwd:L2:s2:c2 does not wait for upd:L1:s1:c1: no dependency"
    text = plan.explain("upd:L1:s3:c1", "fwd:L1:s4:c2")
    assert text.splitlines() == [
        "fwd:L1:s4:c2 waits for upd:L1:s3:c1 through 2 edge(s):",
        "  upd:L1:s3:c1 -> sync:s4  [data: params -> params/L1; made by insert_syncs]",
        "  sync:s4 -> fwd:L1:s4:c2  [data: snapshot/L1 -> params; made by insert_syncs]"]
    with pytest.raises(dt.ConfigError, match="no op 'fwd:L9:s0' in this graph"):
        plan.explain("fwd:L9:s0", "out:s0")
    plan.validate()  # every window shape passes every rule


def test_timeline_html_and_png(blobs: dt.Dataset, tmp_path: object) -> None:
    from pathlib import Path

    result = dt.compile(MODEL, blobs, dt.LayerLocal(5, "shared"), batch_size=16, epochs=1).run("threads")
    html = result.timeline(Path(str(tmp_path)) / "t.html").read_text()
    assert "<html" in html.lower() and "Bokeh" in html and "lane1-0-w0" in html and "lane1-1-w0" in html
    png = result.timeline(Path(str(tmp_path)) / "t.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    with pytest.raises(dt.ConfigError, match=r"use a \.html or \.png file name"):
        result.timeline(Path(str(tmp_path)) / "t.pdf")


def test_staleness_damping_is_a_pass_that_scales_each_update(blobs: dt.Dataset) -> None:
    damped = dt.LayerLocal(5, "sharded", damping=0.2)
    assert damped.passes()[-1] == "damp_stale_updates" and "damp_stale_updates" not in dt.LayerLocal(5).passes()
    g = damped.build(MODEL, Window(0, 0, 0, 0, 10, evaluate=False), batch_size=4)
    assert g.nodes["upd:L1:s0:c1"]["lr_scale"] == 1.0  # fresh snapshot: nothing to correct
    assert g.nodes["upd:L2:s7:c2"]["lr_scale"] == pytest.approx(1 / (1 + 0.2 * 2))  # 2 steps after the sync at 5
    result = dt.compile(MODEL, blobs, damped, **KW).run("threads")
    assert weights_equal(result.weights, train_reference_layerlocal(MODEL, blobs, damped, **KW))
    assert not weights_equal(result.weights, dt.compile(MODEL, blobs, dt.LayerLocal(5, "sharded"), **KW).run("sync").weights)
    # With k = 1 every update reads a fresh snapshot: damping changes nothing, still exactly Sync.
    exact = dt.compile(MODEL, blobs, dt.LayerLocal(1, "shared", damping=0.5), **KW).run("sync")
    assert weights_equal(exact.weights, train_reference(MODEL, blobs, **KW))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_damping_must_be_a_finite_non_negative_number(bad: object) -> None:
    with pytest.raises(dt.ConfigError, match=r"damping = .* must be a finite number >= 0"):
        dt.LayerLocal(5, damping=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", ["shared", "sharded"])
def test_delay_compensation_predicts_stale_layers_from_their_momentum(blobs: dt.Dataset, data: str) -> None:
    """compensate=True is one more pass; the graph equals the loop that predicts W - n * lr * v (and differs without it)."""
    kw = {**KW, "momentum": 0.9}
    predicted = dt.LayerLocal(5, data, compensate=True)
    assert predicted.passes()[-1] == "predict_stale_weights" and str(predicted).endswith("compensate=True)")
    g = predicted.build(MODEL, Window(0, 0, 0, 0, 10, evaluate=False), batch_size=4)
    missed = 2 if data == "shared" else 1  # steps 5, 6 update layer 1 in shared mode; sharded: only step 6 (chain 6 % 3 + 1)
    assert g.nodes["fwd:L1:s7:c2"]["predict_steps"] == missed
    assert "predict_steps" not in g.nodes["fwd:L2:s7:c2"]  # a chain's own layer is never stale
    first = "fwd:L1:s5:c2" if data == "shared" else "fwd:L1:s5:c3"
    assert "predict_steps" not in g.nodes[first]  # the first step after a sync has missed nothing
    plan = dt.compile(MODEL, blobs, predicted, **kw)
    plan.validate()
    result = plan.run("threads")
    assert weights_equal(result.weights, train_reference_layerlocal(MODEL, blobs, predicted, **kw))
    plain = dt.compile(MODEL, blobs, dt.LayerLocal(5, data), **kw).run("sync")
    assert not weights_equal(result.weights, plain.weights)
    # k = 1 shared: no update is ever missed, so it is still exactly Sync.
    exact = dt.compile(MODEL, blobs, dt.LayerLocal(1, "shared", compensate=True), **kw).run("sync")
    assert weights_equal(exact.weights, train_reference(MODEL, blobs, **kw))


def test_delay_compensation_needs_momentum(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match=r"momentum = 0 gives it none; set momentum"):
        dt.compile(MODEL, blobs, dt.LayerLocal(5, compensate=True), momentum=0.0)
    with pytest.raises(dt.ConfigError, match="compensate = 1 must be True or False"):
        dt.LayerLocal(5, compensate=1)  # type: ignore[arg-type]


def test_a_user_pass_that_makes_a_cycle_fails_at_that_pass_with_the_cycle_printed(blobs: dt.Dataset) -> None:
    def wait_for_the_future(g: nx.DiGraph, model: dt.MLP) -> nx.DiGraph:
        add_control(g, "upd:L1:s6:c1", "fwd:L1:s5:c1", made_by="wait_for_the_future")
        return g

    schedule = dt.LayerLocal(4, extra=(("insert_syncs", wait_for_the_future),))
    with pytest.raises(dt.GraphError, match=r"graph after pass wait_for_the_future breaks 1 rule\(s\):\n"
                                            r"  rule 1 \(acyclic\): cycle .*fwd:L1:s5:c1 -> .*upd:L1:s6:c1 -> fwd:L1:s5:c1"):
        dt.compile(MODEL, blobs, schedule, batch_size=16).validate()
