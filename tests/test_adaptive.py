"""Adaptive: the inner schedule's interval grows on a schedule; chosen per window, recorded, equal to its loop."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import dagtrain as dt
from dagtrain.reference import train_reference_layerlocal, train_reference_localsgd
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=3)
KW = {"batch_size": 16, "epochs": 3, "lr": 0.1, "momentum": 0.9}  # 38 steps per epoch


def test_k_grows_by_epoch_up_to_its_levels() -> None:
    s = dt.Adaptive(dt.LayerLocal(5, "sharded"), growth=2, every=1, levels=2)
    assert [s.k_at(e) for e in range(5)] == [5, 10, 20, 20, 20]
    assert [dt.Adaptive(dt.LayerLocal(3), growth=3, every=2, levels=1).k_at(e) for e in range(4)] == [3, 3, 9, 9]
    assert s.align_window_steps(100) == 100 and s.align_window_steps(30) == 20
    assert s.passes() == dt.LayerLocal(5, "sharded").passes()


def test_graph_equals_the_loop_with_each_epochs_k_and_records_the_syncs(blobs: dt.Dataset) -> None:
    inner = dt.LayerLocal(4, "sharded")
    adaptive = dt.Adaptive(inner, growth=2, every=1, levels=1)
    plan = dt.compile(MODEL, blobs, adaptive, **KW)
    plan.validate()
    result = plan.run("threads")
    assert weights_equal(result.weights, train_reference_layerlocal(MODEL, blobs, inner, k_at=adaptive.k_at, **KW))
    assert not weights_equal(result.weights, dt.compile(MODEL, blobs, inner, **KW).run("sync").weights)
    syncs = result.info["sync_steps"]
    assert syncs == plan.sync_steps()
    first, second = [s for s in syncs if s <= 38], [s for s in syncs if 38 < s <= 76]
    assert first[:3] == [4, 8, 12] and first[-1] == 38  # k = 4 in epoch 0, the epoch's end always syncs
    assert second[:3] == [46, 54, 62] and second[-1] == 76  # k = 8 in epoch 1 (38 + 8, ...)
    assert len({t.name for t in plan.program(plan.windows[0]).tasks if t.name.startswith("sync")}) == len(first)


def test_no_growth_is_the_inner_schedule_exactly(blobs: dt.Dataset) -> None:
    inner = dt.LocalSGD(4, 2)
    for same in (dt.Adaptive(inner, growth=1), dt.Adaptive(inner, levels=0)):
        assert weights_equal(dt.compile(MODEL, blobs, same, **KW).run("sync").weights,
                             train_reference_localsgd(MODEL, blobs, inner, **KW))


@pytest.mark.parametrize("bad, match", [
    ({"inner": dt.Sync()}, "Adaptive needs a schedule with a sync interval"),
    ({"growth": 0}, "growth = 0 must be an integer >= 1"),
    ({"every": 1.5}, "every = 1.5 must be an integer >= 1"),
    ({"levels": -1}, "levels = -1 must be an integer >= 0"),
])
def test_bad_settings_are_refused(bad: dict[str, object], match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.Adaptive(**bad)  # type: ignore[arg-type]


def _drift_plan(blobs: dt.Dataset, drift: float) -> dt.Plan:
    return dt.compile(MODEL, blobs, dt.Adaptive(dt.LayerLocal(2, "sharded"), growth=2, levels=2, drift=drift),
                      window_steps=8, **KW)


def test_on_drift_each_window_picks_k_by_the_rule_and_equals_the_loop_with_those_syncs(blobs: dt.Dataset) -> None:
    """drift=0.03 on this data: k goes up (2 -> 4) while the weights settle, and back down when they move again."""
    plan = _drift_plan(blobs, 0.03)
    plan.validate()
    result = plan.run("threads")
    decisions = result.info["adaptive"]
    assert len(decisions) == len(plan.windows) and decisions[0]["k"] == 2
    schedule = plan.schedule
    assert isinstance(schedule, dt.Adaptive)
    for now, after in itertools.pairwise(decisions):  # each choice follows from the drift measured before it
        level = {2: 0, 4: 1, 8: 2}[now["k"]]
        assert after["k"] == schedule.k_of_level(schedule.next_level(level, now["drift"]))
    ks = [d["k"] for d in decisions]
    assert 4 in ks and any(a > b for a, b in itertools.pairwise(ks))  # it grew, and it also shrank
    syncs = result.info["sync_steps"]
    assert syncs != plan.sync_steps()  # the run chose other syncs than the plan's starting level
    assert weights_equal(result.weights, train_reference_layerlocal(MODEL, blobs, dt.LayerLocal(2, "sharded"),
                                                                    syncs=syncs, **KW))


def test_on_drift_extremes_are_the_fixed_schedules(blobs: dt.Dataset) -> None:
    """A threshold nothing stays under keeps k = 2 (LayerLocal(2) exactly); one nothing passes climbs to k = 8 and stays."""
    never = _drift_plan(blobs, 1e-9).run("sync")
    assert {d["k"] for d in never.info["adaptive"]} == {2}
    assert weights_equal(never.weights, dt.compile(MODEL, blobs, dt.LayerLocal(2, "sharded"), window_steps=8, **KW)
                         .run("sync").weights)
    always = _drift_plan(blobs, 1e9).run("sync")
    assert [d["k"] for d in always.info["adaptive"]][:4] == [2, 4, 8, 8]


def test_on_drift_resumes_at_the_level_it_stopped(blobs: dt.Dataset, tmp_path: Path) -> None:
    plan = _drift_plan(blobs, 0.03)
    full = plan.run("sync")

    def crash(done: int, total: int, info: dict[str, object]) -> None:
        if done >= 64:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        plan.run("sync", checkpoint=tmp_path / "c.zarr", progress=crash)
    resumed = plan.run("sync", resume=tmp_path / "c.zarr")
    assert weights_equal(resumed.weights, full.weights)
    assert resumed.info["adaptive"] == [d for d in full.info["adaptive"] if d["step"] >= 64]


def test_bad_drift_is_refused() -> None:
    with pytest.raises(dt.ConfigError, match=r"Adaptive drift = -0\.1 must be a positive number"):
        dt.Adaptive(dt.LayerLocal(2), drift=-0.1)
    assert str(dt.Adaptive(dt.LayerLocal(2), drift=0.01)).endswith("levels=3, drift=0.01)")
