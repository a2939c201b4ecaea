"""Adaptive: the inner schedule's interval grows on a schedule; chosen per window, recorded, equal to its loop."""

from __future__ import annotations

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
