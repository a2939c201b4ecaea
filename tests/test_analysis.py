"""Analysis before anything runs: cost model, list scheduling, the prediction, and measured times after a run."""

from __future__ import annotations

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.analysis.predict import (
    CostModel,
    calibrate,
    critical_seconds,
    lane_shape,
    list_schedule,
    makespan,
    measure_contention,
    measure_threaded,
    predicted_makespan,
)
from dagtrain.execute.ops import eval_part_sizes
from dagtrain.graph.build import forward_flops

MODEL = dt.MLP([12, 64, 64, 3], seed=0)


def test_list_schedule_golden() -> None:
    """a -> b and c -> d; c is long, so it goes first; two workers finish at max(path lengths)."""
    tasks = nx.DiGraph()
    for name, flops in {"a": 1e9, "b": 1e9, "c": 3e9, "d": 1e9}.items():
        tasks.add_node(name, cost=flops)
    tasks.add_edges_from([("a", "b"), ("c", "d")])
    cost = CostModel(flops_per_second=1e9, overhead=0.0)
    slots = list_schedule(tasks, 2, cost)
    assert [(s.task, s.worker, s.start, s.stop) for s in slots] == [
        ("c", 0, 0.0, 3.0), ("a", 1, 0.0, 1.0), ("b", 1, 1.0, 2.0), ("d", 1, 3.0, 4.0)]
    assert makespan(slots) == 4.0
    assert makespan(list_schedule(tasks, 1, cost)) == 6.0
    assert makespan(list_schedule(tasks, 2, cost, measured={"c": 0.5})) == 2.0


def _window_of_chains(costs: list[float]) -> nx.DiGraph:
    """One LayerLocal-like window: chains of these flops, all feeding one sync."""
    tasks = nx.DiGraph()
    tasks.add_node("sync", cost=0.0)
    for i, flops in enumerate(costs):
        tasks.add_node(f"chain{i}", cost=flops)
        tasks.add_edge(f"chain{i}", "sync")
    return tasks


def test_contention_stretches_only_tasks_that_run_beside_another() -> None:
    cost = CostModel(flops_per_second=1e9, overhead=0.0, contention=1.5)
    chains = _window_of_chains([2e9, 2e9])
    assert makespan(list_schedule(chains, 2, cost)) == pytest.approx(3.0)  # both run together: 2 s * 1.5
    assert makespan(list_schedule(chains, 1, cost)) == pytest.approx(4.0)  # one worker: never beside another
    line = nx.path_graph(["a", "b", "c"], create_using=nx.DiGraph)
    nx.set_node_attributes(line, 1e9, "cost")
    assert makespan(list_schedule(line, 2, cost)) == pytest.approx(3.0)  # a chain of tasks: the second worker idles


def test_arbitrary_ready_order_predicts_the_idle_of_a_badly_packed_window() -> None:
    """Chains 3, 2, 2, 1 on two workers: longest first packs {3,1} {2,2} (4 s); a random order averages more."""
    chains = _window_of_chains([3e9, 2e9, 2e9, 1e9])
    best = CostModel(flops_per_second=1e9, overhead=0.0)
    blind = CostModel(flops_per_second=1e9, overhead=0.0, ready_order="arbitrary", orders=64)
    assert predicted_makespan(chains, 2, best) == pytest.approx(4.0)
    assert 4.0 < predicted_makespan(chains, 2, blind) <= 5.0  # the worst order, {3,2} then {2,1}... ends at 5 s
    assert predicted_makespan(chains, 1, blind) == pytest.approx(8.0)


def test_latency_delays_each_task_after_its_last_input() -> None:
    """A hand-over costs every dependency on the path, not every task: a chain pays it per edge, parallel sources not at all."""
    cost = CostModel(flops_per_second=1e9, overhead=0.0, latency=0.25)
    line = nx.path_graph(["a", "b", "c"], create_using=nx.DiGraph)
    nx.set_node_attributes(line, 1e9, "cost")
    slots = list_schedule(line, 2, cost)
    assert [(s.task, s.start, s.stop) for s in slots] == [("a", 0.0, 1.0), ("b", 1.25, 2.25), ("c", 2.5, 3.5)]
    assert critical_seconds(line, cost) == pytest.approx(3.5)
    chains = _window_of_chains([2e9, 1e9])  # two sources side by side, then the sync (0 flops) after the longer one
    assert makespan(list_schedule(chains, 2, cost)) == pytest.approx(2.25)
    # With a worker free the whole time, a ready task that has not been handed over yet still waits.
    fork = nx.DiGraph([("a", "b"), ("a", "c")])
    nx.set_node_attributes(fork, 1e9, "cost")
    assert makespan(list_schedule(fork, 2, cost)) == pytest.approx(2.25)
    assert makespan(list_schedule(fork, 1, cost)) == pytest.approx(3.25)  # c waits for the one worker, not for a hand-over


def test_cost_model_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match=r"contention = 0\.5 must be >= 1\.0"):
        CostModel(contention=0.5)
    with pytest.raises(ValueError, match="ready_order = 'fifo'"):
        CostModel(ready_order="fifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flops_per_second > 0"):
        CostModel(flops_per_second=0.0)
    with pytest.raises(ValueError, match=r"latency = -0\.001 must be >= 0"):
        CostModel(latency=-0.001)


def test_measure_contention_tells_gil_bound_work_from_work_that_releases_it() -> None:
    """Sleeping releases the GIL (two threads overlap: ~1.0); a pure-Python loop holds it (two threads take ~2x)."""
    import time

    def holds_gil() -> None:
        total = 0
        for i in range(20_000):
            total += i

    assert measure_contention(lambda: time.sleep(0.002), seconds=0.05) < 1.3
    assert measure_contention(holds_gil, seconds=0.1) > 1.5


def test_measure_threaded_sees_the_scheduler_hand_over_and_the_gil() -> None:
    """Real Dask threads: sleeping tasks overlap (contention ~1) and still pay a hand-over; GIL-bound tasks stretch."""
    import time

    def holds_gil() -> None:
        total = 0
        for i in range(20_000):
            total += i

    base = CostModel(flops_per_second=1e9, ready_order="arbitrary")
    sleeping = measure_threaded(lambda: time.sleep(0.002), steps_per_task=1.5, intervals=10, base=base)
    assert sleeping.flops_per_second == 1e9 and sleeping.ready_order == "arbitrary"  # the rest of base is kept
    assert 1.0 <= sleeping.contention < 1.3
    assert 0.0 < sleeping.latency < 0.01  # a hand-over goes through the scheduler's thread: more than nothing, well under 10 ms
    fenced = measure_threaded(lambda: time.sleep(0.002), steps_per_task=1.5, intervals=10, barrier=True)
    assert 1.0 <= fenced.contention < 1.3 and 0.0 < fenced.latency < 0.01  # a sync task between intervals: the same terms
    with pytest.raises(ValueError, match="intervals = 0"):
        measure_threaded(intervals=0)
    rated = measure_threaded(lambda: time.sleep(0.002), steps_per_task=1.5, intervals=10, step_flops=1e6)
    assert 2e8 < rated.flops_per_second <= 5e8  # 1 MFLOP in (a little over) 2 ms on one thread
    gil_bound = measure_threaded(holds_gil, steps_per_task=10, per_interval=4, intervals=3, rounds=5)
    assert gil_bound.contention > 1.4  # ~10 switch intervals a task: single rounds 1.3-2.1, the median of five well above
    matmuls = measure_threaded(intervals=10)  # no step given: 2 ms of float32 matmuls, BLAS pinned to 1 thread
    assert matmuls.contention >= 1.0 and 0.0 < matmuls.latency < 0.05 and matmuls.flops_per_second == CostModel().flops_per_second


def test_lane_shape_reads_the_granularity_of_a_window(blobs: dt.Dataset) -> None:
    """A chain step per chain and step. On one worker a task is a chain's segment: sharded, a chain takes every
    L-th step (k/L chain steps a task), shared every step (k). On two, a task is a lane's share of an interval."""
    model = dt.MLP([12, 16, 16, 16, 3], seed=0)  # 4 layers, 4 chains
    for data, per_task, copies in (("sharded", 2.0, 1), ("shared", 8.0, 4)):
        plan = dt.compile(model, blobs, dt.LayerLocal(8, data), batch_size=16, epochs=1)
        n_syncs = sum(1 for t in plan.task_graph(0) if t.startswith("sync"))
        one = lane_shape(plan.graph(0), plan.task_graph(0), 1)
        assert one["steps_per_task"] == pytest.approx(per_task, rel=0.1)  # k/L or k, less a short last interval
        assert one["per_interval"] == 4 and one["intervals"] == n_syncs
        shape = lane_shape(plan.graph(0, workers=2), plan.task_graph(0, workers=2), 2)
        tasks = [t for t in plan.task_graph(0, workers=2) if t.startswith("lane")]
        assert shape["steps_per_task"] == copies * plan.windows[0].n_steps / len(tasks)  # a step in one chain or in all four
        assert shape["steps_per_task"] == pytest.approx(2 * per_task, rel=0.1)  # two chains a lane
        assert shape["per_interval"] == 1
        assert shape["intervals"] == n_syncs  # each lane runs its own copy of a sync: still one sync
    sync = dt.compile(model, blobs, batch_size=16, epochs=1)
    with pytest.raises(ValueError, match="no chain tasks"):
        lane_shape(sync.graph(0), sync.task_graph(0), 2)


def test_measure_cost_times_the_plan_s_own_step_on_its_lane_shape(blobs: dt.Dataset) -> None:
    """A CostModel from micro-benchmarks alone (real Dask threads), usable before the plan ever runs."""
    model = dt.MLP([12, 64, 64, 64, 3], seed=0)
    plan = dt.compile(model, blobs, dt.LayerLocal(8, "sharded"), batch_size=32, epochs=1)
    two = plan.measure_cost(workers=2, rounds=1)
    assert two.ready_order == "arbitrary" and two.contention >= 1.0
    assert 0.0 < two.latency < 0.05  # each hand-over goes through the scheduler's thread
    assert 1e7 < two.flops_per_second < 1e13  # a real rate, measured on this machine, not the 60 GFLOP/s default
    one = plan.measure_cost(workers=1, rounds=1)
    assert (one.contention, one.latency) == (1.0, 0.0)  # the synchronous scheduler: nothing beside, no hand-over thread
    assert plan.analyze(workers=2, cost=two).predicted_seconds > 0
    assert dt.compile(model, blobs, batch_size=32, epochs=1).measure_cost(workers=2, rounds=1).latency > 0  # Sync: no lanes
    with pytest.raises(dt.ConfigError, match="rounds = 0 must be a positive integer"):
        plan.measure_cost(rounds=0)


def test_training_step_repeats_one_step_of_the_reference_loop(blobs: dt.Dataset) -> None:
    """sgd_step is the loop's step, bit for bit; training_step restarts from the initial weights every call."""
    import numpy as np

    from dagtrain.data.order import epoch_order
    from dagtrain.reference import sgd_step, train_reference, training_step

    model = dt.MLP([12, 16, 3], seed=0)
    x, y = blobs.read_split("train")
    idx = epoch_order(len(y), blobs.chunk_size, model.seed, 0)[:32]
    params, velocity = model.init_params(), [None, None]
    acts = [model.layer_activation(j) for j in (1, 2)]
    sgd_step(model, params, velocity, acts, x[idx], y[idx], 0.05, 0.0)
    loop = train_reference(model, blobs, batch_size=32, max_steps=1)

    def same(a: list[dt.Params], b: list[dt.Params]) -> bool:
        return all(np.array_equal(p.W, q.W) and np.array_equal(p.b, q.b) for p, q in zip(a, b, strict=True))

    assert same(params, loop)
    step = training_step(model, x[idx], y[idx], lr=0.05)
    first, second = step(), step()
    assert same(first, loop) and same(second, loop)  # the second call did not start from the first's weights


def test_chain_steps_are_layerlocal_s_steps_bit_for_bit(blobs: dt.Dataset) -> None:
    """chain_step for layer c trains layer c as LayerLocal's chain c does (shared data: all chains take step 0)."""
    import numpy as np

    from dagtrain.data.order import epoch_order
    from dagtrain.reference import train_reference_layerlocal, training_step

    model = dt.MLP([12, 16, 16, 3], seed=0)
    x, y = blobs.read_split("train")
    idx = epoch_order(len(y), blobs.chunk_size, model.seed, 0)[:32]
    after_one = train_reference_layerlocal(model, blobs, dt.LayerLocal(4, "shared"), batch_size=32, max_steps=1)
    step = training_step(model, x[idx], y[idx], lr=0.05, chains=[1, 2, 3])
    initial = model.init_params()
    for layer in (1, 2, 3):  # round robin: each call is the next chain's step
        trained = step()
        assert np.array_equal(trained[layer - 1].W, after_one[layer - 1].W)
        assert all(np.array_equal(trained[j].W, initial[j].W) for j in range(3) if j != layer - 1)  # the others stay
    with pytest.raises(ValueError, match=r"chains = \[0\] must name layers 1\.\.3"):
        training_step(model, x[idx], y[idx], chains=[0])


def test_evaluation_parts_cost_the_forward_pass_over_their_test_samples(blobs: dt.Dataset) -> None:
    """The cost model sees evaluation: each part costs the forward pass and loss over the samples it scores."""
    model = dt.MLP([12, 64, 3], seed=0)
    g = dt.compile(model, blobs, batch_size=32, epochs=1).graph(0)
    parts = sorted((d["part"], d["cost"]) for _, d in g.nodes(data=True) if d["kind"] == "eval" and d.get("part") is not None)
    sizes = eval_part_sizes(blobs, "test")
    assert len(parts) == len(sizes) > 1 and sum(sizes) == blobs.size("test")
    assert [c for _, c in parts] == [forward_flops(model, n) for n in sizes]
    assert forward_flops(model, 10) == 2 * 10 * (12 * 64 + 64 * 3) + 5 * 10 * 3


def test_analyze_predicts_layerlocal_faster_than_sync_on_two_workers(blobs: dt.Dataset) -> None:
    kw = {"batch_size": 32, "epochs": 1}
    wide = dt.MLP([12, 512, 512, 3], seed=0)  # enough arithmetic per task that overhead does not dominate
    sync = dt.compile(wide, blobs, **kw).analyze(workers=2)
    local = dt.compile(wide, blobs, dt.LayerLocal(6, "sharded"), **kw).analyze(workers=2)
    # Sync's steps are one chain: all its work but the evaluation parts (side by side) is on the critical path.
    assert sync.formula_seconds is None
    assert sync.span_flops >= sync.work_flops - forward_flops(wide, blobs.size("test"))
    assert local.syncs == 4 and local.parallelism > 1.5
    assert local.predicted_seconds < sync.predicted_seconds
    assert local.work_flops < sync.work_flops  # chains skip the backward below their layer
    assert local.formula_seconds is not None and local.formula_seconds > 0
    text = str(local)
    assert "analysis of LayerLocal(k=6, data='sharded') over 1 window(s)" in text and "seed's formula" in text
    with pytest.raises(dt.ConfigError, match="workers = 0 must be a positive integer"):
        dt.compile(wide, blobs, **kw).analyze(workers=0)


def test_measured_task_times_feed_the_analysis_and_the_cost_model(blobs: dt.Dataset) -> None:
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(6, "sharded"), batch_size=16, epochs=1)
    result = plan.run("sync")
    after = plan.analyze(workers=1, result=result)
    assert after.measured and "measured task times" in str(after)
    # On one worker the predicted time is the sum of the measured task times of the run.
    busy = sum(r.stop - r.start for r in result.tasks)
    assert after.predicted_seconds == pytest.approx(busy, rel=0.05)
    assert 0 < after.span_seconds <= after.predicted_seconds + 1e-9
    fitted = calibrate(plan.task_graph(0), result.tasks)
    assert fitted.flops_per_second > 0 and 0 <= fitted.overhead < 0.05


def test_actions_are_the_schedule_as_comparable_data(blobs: dt.Dataset) -> None:
    import json

    plan = dt.compile(MODEL, blobs, dt.LayerLocal(2, "sharded"), batch_size=16, max_steps=4)
    actions = plan.actions()
    assert sorted(actions) == ["chain1", "chain2", "chain3", "syncs"]
    assert actions["syncs"] == ["sync:s2", "sync:s4"]
    assert actions["chain2"] == ["load:s1:c2", "fwd:L1:s1:c2", "fwd:L2:s1:c2", "fwd:L3:s1:c2", "loss:s1:c2",
                                 "bwd:L3:s1:c2", "bwd:L2:s1:c2", "upd:L2:s1:c2"]
    assert json.loads(json.dumps(actions)) == actions
    assert actions != dt.compile(MODEL, blobs, dt.LayerLocal(2, "shared"), batch_size=16, max_steps=4).actions()
    assert list(dt.compile(MODEL, blobs, batch_size=16, max_steps=4).actions()) == ["main"]


def test_schedule_table_shows_chains_side_by_side(blobs: dt.Dataset) -> None:
    plan = dt.compile(dt.MLP([12, 512, 512, 3], seed=0), blobs, dt.LayerLocal(6, "shared"), batch_size=32, epochs=1)
    table = plan.schedule_table(workers=2, cost=CostModel(flops_per_second=1e9, overhead=1e-4))
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "worker 0" and lines[0].split("|")[2].strip() == "worker 1"
    rows = [[c.strip() for c in line.split("|")[1:]] for line in lines[2:] if "|" in line]
    assert any(a.startswith("lane") and b.startswith("lane") for a, b in rows)  # two lanes of chains at once
    assert any("lane0-1" in cell for row in rows for cell in row)  # the next interval, its sync inside (no barrier task)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_draw_writes_a_picture_of_one_interval(blobs: dt.Dataset, tmp_path: object, suffix: str) -> None:
    from pathlib import Path

    plan = dt.compile(MODEL, blobs, dt.LayerLocal(3, "shared"), batch_size=16, epochs=1)
    out = plan.draw(Path(str(tmp_path)) / f"interval{suffix}")
    data = out.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    else:
        text = data.decode()
        assert text.lstrip().startswith("<?xml") and "<svg" in text and "sync:s3" in text and "sync:s6" in text
    with pytest.raises(dt.ConfigError, match=r"use a \.svg or \.png file name"):
        plan.draw(Path(str(tmp_path)) / "x.pdf")


def test_inspect_command_prints_without_training(blobs: dt.Dataset, tmp_path: object,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from dagtrain.cli import main

    picture = Path(str(tmp_path)) / "i.svg"
    assert main(["inspect", "--data", blobs.path, "--layers", "12,16,8,3", "--batch-size", "16", "--k", "5",
                 "--data-mode", "sharded", "--draw", str(picture), "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("passes: build_exact -> deal_to_chains -> insert_syncs -> read_stale_snapshots -> pack_lanes"
                          " -> sync_per_lane -> fuse")
    assert "analysis of LayerLocal(k=5, data='sharded')" in out and "worker 1" in out and picture.exists()
    assert main(["inspect", "--data", blobs.path, "--layers", "12,16,3", "--schedule", "sync", "--json"]) == 0
    assert '"passes": ["build_exact", "pack_lanes", "sync_per_lane", "fuse"]' in capsys.readouterr().out
