"""The lanes pass: independent chains packed onto workers with control edges, and what a run does with them."""

from __future__ import annotations

import itertools
import re

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.analysis.predict import CostModel, list_schedule, makespan
from dagtrain.execute.lanes import longest_first, pack_lanes
from dagtrain.graph.ir import CONTROL
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 32, 16, 8, 3], seed=1)  # four layers: chains of unequal work, 801 : 535 : 405 : 337 in shape
KW = {"batch_size": 16, "epochs": 1, "lr": 0.1, "momentum": 0.9}
CHAIN_TASK = re.compile(r"chain(\d+)-(\d+)$")


def test_longest_first_deals_the_heaviest_item_to_the_least_loaded_bin() -> None:
    costs = {1: 801.0, 2: 535.0, 3: 405.0, 4: 337.0}
    assert longest_first(costs, [0, 1]) == {1: 0, 2: 1, 3: 1, 4: 0}  # 1138 | 940: the best split of the four
    assert longest_first(costs, [0, 1, 2, 3]) == {1: 0, 2: 1, 3: 2, 4: 3}
    assert longest_first({1: 1.0, 2: 1.0, 3: 1.0}, ["a", "b"]) == {1: "a", 2: "b", 3: "a"}  # ties: first bin, lowest item


def intervals_of(tasks: nx.DiGraph) -> dict[int, list[str]]:
    """The chain tasks of a LayerLocal window by interval (segment = interval when segment_steps = k)."""
    out: dict[int, list[str]] = {}
    for t in tasks:
        m = CHAIN_TASK.match(t)
        if m:
            out.setdefault(int(m.group(2)), []).append(t)
    return out


@pytest.mark.parametrize("workers", [2, 3])
def test_each_interval_becomes_one_path_of_tasks_per_lane_heaviest_first(blobs: dt.Dataset, workers: int) -> None:
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(6, "sharded"), **KW)
    tasks = plan.task_graph(0, workers=workers)
    g = plan.graph(0, workers=workers)
    cost = {t: tasks.nodes[t]["cost"] for t in tasks}
    for interval, members in intervals_of(tasks).items():
        lanes = list(nx.weakly_connected_components(tasks.subgraph(members)))
        assert len(lanes) == min(workers, len(members)), f"interval {interval}: {lanes}"
        for lane in lanes:
            path = list(nx.topological_sort(tasks.subgraph(lane)))
            assert all(tasks.has_edge(a, b) for a, b in itertools.pairwise(path))  # one ready task per lane at a time
            assert [cost[t] for t in path] == sorted((cost[t] for t in path), reverse=True)
        loads = sorted(sum(cost[t] for t in lane) for lane in lanes)
        assert loads[-1] <= sum(loads) / len(loads) + max(cost[t] for t in members)  # LPT's bound on the heaviest lane
    assert g.graph["passes"][-1] == "pack_lanes"
    added = [(u, v) for u, v, d in g.edges(data=True) if d["made_by"] == "pack_lanes"]
    assert added and all(g.edges[e]["kind"] == CONTROL and g.edges[e]["bind"] == () for e in added)
    assert all(g.nodes[u]["chain"] != g.nodes[v]["chain"] for u, v in added)


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
    tasks = plan.task_graph(0, workers=threaded.info["lanes"])
    for members in intervals_of(tasks).values():
        for lane in nx.weakly_connected_components(tasks.subgraph(members)):
            runs = sorted((r.start, r.stop) for r in threaded.tasks if r.key.rsplit("-w", 1)[0] in lane
                          and r.key.endswith("-w0"))
            assert len(runs) == len(lane)
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs)), runs


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
