"""The lanes pass: independent chains packed onto workers with control edges, and what a run does with them."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.analysis.predict import CostModel, list_schedule, makespan
from dagtrain.execute.lanes import longest_first, pack_lanes
from dagtrain.graph.ir import CONTROL
from dagtrain.graph.validate import validate
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 32, 16, 8, 3], seed=1)  # four layers: chains of unequal work, 801 : 535 : 405 : 337 in shape
KW = {"batch_size": 16, "epochs": 1, "lr": 0.1, "momentum": 0.9}


def test_longest_first_deals_the_heaviest_item_to_the_least_loaded_bin() -> None:
    costs = {1: 801.0, 2: 535.0, 3: 405.0, 4: 337.0}
    assert longest_first(costs, [0, 1]) == {1: 0, 2: 1, 3: 1, 4: 0}  # 1138 | 940: the best split of the four
    assert longest_first(costs, [0, 1, 2, 3]) == {1: 0, 2: 1, 3: 2, 4: 3}
    assert longest_first({1: 1.0, 2: 1.0, 3: 1.0}, ["a", "b"]) == {1: "a", 2: "b", 3: "a"}  # ties: first bin, lowest item


def lane_ops(g: nx.DiGraph) -> dict[int, dict[int, dict[int, list[str]]]]:
    """The chain ops of a window packed into lanes: interval -> lane -> chain -> ops."""
    out: dict[int, dict[int, dict[int, list[str]]]] = {}
    for key, d in g.nodes(data=True):
        if d.get("chain") is not None and d.get("lane") is not None:
            out.setdefault(d["interval"], {}).setdefault(d["lane"], {}).setdefault(d["chain"], []).append(key)
    return out


@pytest.mark.parametrize("workers", [2, 3])
def test_each_interval_becomes_one_task_per_lane_its_chains_heaviest_first(blobs: dt.Dataset, workers: int) -> None:
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(6, "sharded"), **KW)
    tasks = plan.task_graph(0, workers=workers)
    g = plan.graph(0, workers=workers)
    by_interval = lane_ops(g)
    assert len(by_interval) == -(-plan.windows[0].n_steps // 6)
    for interval, lanes in by_interval.items():
        assert len(lanes) == min(workers, sum(len(chains) for chains in lanes.values()))
        work = {lane: {c: sum(g.nodes[k]["cost"] for k in ops) for c, ops in chains.items()} for lane, chains in lanes.items()}
        for lane, chains in lanes.items():
            order = sorted(chains, key=lambda c: -work[lane][c])  # heaviest first, each after the one before
            for a, b in itertools.pairwise(order):
                assert nx.has_path(g, chains[a][-1], chains[b][0]) and not nx.has_path(g, chains[b][0], chains[a][-1])
            ops = {k for c in chains.values() for k in c}
            assert set(tasks.nodes[f"lane{lane}-{interval}"]["ops"]) >= ops  # one task: the lane's share of the interval
        loads = sorted(sum(w.values()) for w in work.values())
        heaviest = max(c for w in work.values() for c in w.values())
        assert loads[-1] <= sum(loads) / len(loads) + heaviest  # LPT's bound on the heaviest lane
        if interval:  # each lane reads the sync through its own copy, inside its task: no barrier task between
            for lane in lanes:
                before = {f"lane{x}-{interval - 1}" for x in by_interval[interval - 1]}
                assert set(tasks.predecessors(f"lane{lane}-{interval}")) == before
    assert [t for t in tasks if t.startswith("sync")] == [f"sync-s{plan.windows[0].n_steps}"]  # the window's last sync only
    assert not [t for t in tasks if t.startswith("chain")]
    assert g.graph["passes"][-2:] == ["pack_lanes", "sync_per_lane"]
    added = [(u, v) for u, v, d in g.edges(data=True) if d["made_by"] == "pack_lanes"]
    assert added and all(g.edges[e]["kind"] == CONTROL and g.edges[e]["bind"] == () for e in added)
    assert all(g.nodes[u]["chain"] != g.nodes[v]["chain"] for u, v in added)


def test_each_lane_runs_its_own_copy_of_a_sync(blobs: dt.Dataset) -> None:
    """A copy reads what the sync read and feeds only its lane; a sync that only lanes read is gone."""
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(6, "sharded"), **KW)
    one, two = plan.graph(0), plan.graph(0, workers=2)
    for sync in (k for k, d in one.nodes(data=True) if d["kind"] == "sync"):
        copies = [f"{sync}@lane{lane}" for lane in range(2) if f"{sync}@lane{lane}" in two]
        readers = {v for _, v in one.out_edges(sync)}
        if all(one.nodes[v].get("chain") is not None for v in readers):  # only the next interval's chains read it
            assert sync not in two and len(copies) == 2
        else:  # the window's last sync: the output and the evaluation read it, no lane does
            assert sync in two and not copies
        for copy in copies:
            assert {u: d["bind"] for u, d in two.pred[copy].items()} == {u: d["bind"] for u, d in one.pred[sync].items()}
            assert {two.nodes[v]["lane"] for v in two.successors(copy)} == {two.nodes[copy]["lane"]}
    broken = plan.graph(0, workers=2)
    copy = next(k for k in broken if "@lane" in k)
    broken.remove_edge(next(iter(broken.pred[copy])), copy)
    with pytest.raises(dt.GraphError, match="rule 7"):
        validate(broken, where="graph after pass sync_per_lane")


@pytest.mark.parametrize("schedule", [dt.Sync(), dt.DelayedGradient(stages=2), dt.LayerLocal(4, "sharded")])
def test_lanes_leave_dependent_chains_and_one_worker_alone(blobs: dt.Dataset, schedule: dt.Schedule) -> None:
    plan = dt.compile(MODEL, blobs, schedule, **KW)
    one = plan.graph(0)
    assert not any(d["made_by"] == "pack_lanes" for _, _, d in one.edges(data=True))
    assert pack_lanes(one.copy(), 1).edges == one.edges
    if not isinstance(schedule, dt.LayerLocal):  # no independent chains: nothing to pack
        assert plan.graph(0, workers=2).edges == one.edges


def test_lanes_change_no_value_and_dask_keeps_them(blobs: dt.Dataset) -> None:
    """Two threads run two lanes: the weights equal the one-worker run's bit for bit, and lane-mates never overlap."""
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(6, "sharded"), **KW)
    alone = plan.run("sync")
    threaded = plan.run("threads")
    assert threaded.info["lanes"] >= 2 and alone.info["lanes"] == 1
    assert weights_equal(threaded.weights, alone.weights)
    lanes = threaded.info["lanes"]
    runs = {r.key.rsplit("-w", 1)[0]: (r.start, r.stop) for r in threaded.tasks if r.key.endswith("-w0")}
    intervals = lane_ops(plan.graph(0, workers=lanes))
    assert len(intervals) == 7  # 38 steps, k = 6
    for interval in range(1, len(intervals)):  # every lane task of an interval starts after all of the one before
        before = [runs[f"lane{x}-{interval - 1}"] for x in intervals[interval - 1]]
        assert all(runs[f"lane{x}-{interval}"][0] >= max(stop for _, stop in before) for x in intervals[interval])


def test_with_lanes_the_ready_order_no_longer_matters(blobs: dt.Dataset) -> None:
    """Without lanes an order-blind scheduler often starts the heavy chain last; with them the prediction is the same."""
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(6, "sharded"), **KW)
    best = CostModel(flops_per_second=1e9, overhead=0.0)
    blind = CostModel(flops_per_second=1e9, overhead=0.0, ready_order="arbitrary")
    packed = plan.analyze(workers=2, cost=best).predicted_seconds
    assert plan.analyze(workers=2, cost=blind).predicted_seconds == pytest.approx(packed, rel=0.02)
    free = plan.task_graph(0)  # no lanes: what the scheduler would choose from
    assert makespan(list_schedule(free, 2, best)) <= makespan(list_schedule(plan.task_graph(0, workers=2), 2, best)) * 1.001


def test_list_schedule_is_simulated_in_time() -> None:
    """A free worker takes a ready task at once: a random rank never parks a task on an idle worker until later."""
    tasks = nx.DiGraph()
    for name, flops in {"a": 1.0, "b": 1.0, "c": 2.0}.items():
        tasks.add_node(name, cost=flops)
    tasks.add_edge("a", "b")
    cost = CostModel(flops_per_second=1.0, overhead=0.0)
    assert {makespan(list_schedule(tasks, 2, cost, seed=s)) for s in range(16)} == {2.0}
