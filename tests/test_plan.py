"""compile(): argument checks that name the fix, max_steps, saving weights, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dagtrain as dt
from dagtrain.cli import main
from tests.conftest import weights_equal


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, r"batch_size = 0 must be a positive integer, e.g. batch_size=128"),
    ({"batch_size": -5}, "batch_size = -5"),
    ({"epochs": 0}, "epochs = 0"),
    ({"lr": 0.0}, r"lr = 0.0 must be a positive finite number"),
    ({"lr": float("nan")}, "lr = nan"),
    ({"momentum": 1.0}, r"momentum = 1.0 must be in \[0, 1\)"),
    ({"max_steps": 0}, "max_steps = 0"),
    ({"segment_steps": 0}, "segment_steps = 0"),
])
def test_bad_plan_arguments(blobs: dt.Dataset, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(dt.ConfigError, match=message):
        dt.compile(dt.MLP([12, 3]), blobs, **kwargs)  # type: ignore[arg-type]


def test_model_must_fit_the_data(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match=r"takes 784 inputs but the data at .* has 12 features; make the first size 12"):
        dt.compile(dt.MLP([784, 3]), blobs)
    with pytest.raises(dt.ConfigError, match=r"has 10 outputs but .* 3 classes; make the last size 3"):
        dt.compile(dt.MLP([12, 10]), blobs)


def test_unknown_scheduler(blobs: dt.Dataset) -> None:
    plan = dt.compile(dt.MLP([12, 3]), blobs, max_steps=2)
    with pytest.raises(dt.ConfigError, match="unknown scheduler 'gpu'"):
        plan.run("gpu")


def test_max_steps_stops_mid_epoch_and_evaluates(blobs: dt.Dataset) -> None:
    result = dt.compile(dt.MLP([12, 3]), blobs, batch_size=32, epochs=5, max_steps=7).run()
    assert result.steps == 7 and result.samples == 7 * 32
    assert len(result.history) == 1 and result.history[0]["step"] == 7


def test_weights_round_trip_through_zarr(blobs: dt.Dataset, tmp_path: Path) -> None:
    result = dt.compile(dt.MLP([12, 5, 3]), blobs, max_steps=3).run("sync")
    result.save(tmp_path / "w.zarr")
    loaded = dt.load_weights(tmp_path / "w.zarr")
    assert all(np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b) for a, b in zip(loaded, result.weights, strict=True))
    with pytest.raises(FileExistsError):
        result.save(tmp_path / "w.zarr")
    with pytest.raises(dt.StoreNotFoundError):
        dt.load_weights(tmp_path / "none.zarr")


def test_progress_reports_every_window(blobs: dt.Dataset) -> None:
    seen: list[tuple[int, int]] = []
    dt.compile(dt.MLP([12, 3]), blobs, batch_size=32, epochs=1, window_steps=5).run(
        progress=lambda done, total, info: seen.append((done, total)))
    assert seen == [(5, 19), (10, 19), (15, 19), (19, 19)]


def test_cli_train_on_a_store(blobs: dt.Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", blobs.path, "--layers", "12,8,3", "--epochs", "2", "--batch-size", "50",
                 "--out", str(tmp_path / "w.zarr"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in report["history"]] == [1, 2] and report["test_accuracy"] > 0.5
    assert len(dt.load_weights(tmp_path / "w.zarr")) == 2


def test_cli_table_and_progress(blobs: dt.Dataset, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dagtrain.cli", "train", "--data", blobs.path, "--layers", "12,8,3",
                           "--epochs", "1", "--out", str(tmp_path / "w.zarr")], capture_output=True, text=True,
                          check=True)
    assert "test acc" in proc.stdout and "weights saved to" in proc.stdout and "ops:" in proc.stdout
    assert "] 5/5 steps" in proc.stderr  # the progress bar


def test_cli_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "missing.zarr")]) == 2
    assert "dagtrain: error: no dataset store at" in capsys.readouterr().err


def test_memory_stays_flat_over_epochs(blobs: dt.Dataset) -> None:
    """Windows carry only the weights forward: 30 epochs peak no higher than 10 (numpy reports to tracemalloc).

    Both runs are past the 8 epoch orders ``epoch_order`` keeps cached, its only (bounded) growth.
    """
    import tracemalloc

    def peak(epochs: int) -> int:
        plan = dt.compile(dt.MLP([12, 512, 512, 3], seed=0), blobs, batch_size=8, epochs=epochs, window_steps=25)
        plan.run("sync")  # compile the window programs outside the measurement
        tracemalloc.start()
        plan.run("sync")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(10), peak(30)
    assert long < 1.1 * short, (short, long)


def test_eval_every_adds_evaluations_without_changing_training(blobs: dt.Dataset) -> None:
    """19 steps an epoch, evaluated every 5: at steps 5, 10, 15 and the epoch's end; the weights are untouched."""
    model = dt.MLP([12, 8, 3], seed=0)
    for schedule, every in ((dt.Sync(), 5), (dt.LayerLocal(4, "sharded"), 8)):
        plain = dt.compile(model, blobs, schedule, batch_size=32, epochs=2).run("sync")
        often = dt.compile(model, blobs, schedule, batch_size=32, epochs=2, eval_every=every).run("sync")
        points = [s for s in range(1, 20) if s % every == 0 or s == 19]
        assert [row["step"] for row in often.history] == points + [19 + s for s in points]
        assert [row["epoch"] for row in often.history][len(points) - 1:len(points) + 1] == [1, round(1 + points[0] / 19, 4)]
        assert [row["test_accuracy"] for row in often.history][len(points) - 1] == plain.history[0]["test_accuracy"]
        assert all(np.array_equal(a.W, b.W) for a, b in zip(plain.weights, often.weights, strict=True))
        assert all(0 <= row["test_accuracy"] <= 1 and row["seconds"] > 0 for row in often.history)


def test_eval_every_must_fall_on_sync_points(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match=r"eval_every = 6 must be a multiple of 4 steps under LayerLocal.*eval_every=4"):
        dt.compile(dt.MLP([12, 3]), blobs, dt.LayerLocal(4), eval_every=6)
    with pytest.raises(dt.ConfigError, match="eval_every = 0 must be a positive integer"):
        dt.compile(dt.MLP([12, 3]), blobs, eval_every=0)
    from dagtrain.experiments.compare import eval_points

    assert eval_points(dt.LayerLocal(10), 25) == 30 and eval_points(dt.Sync(), 25) == 25 and eval_points(dt.Sync(), None) is None


def test_a_schedule_given_by_name_is_refused_with_the_objects_to_use(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match=r"schedule must be a dagtrain schedule object, got 'layerlocal'; "
                                             r"use dt.Sync\(\), dt.LayerLocal\(k=10\)"):
        dt.compile(dt.MLP([12, 3]), blobs, "layerlocal")  # type: ignore[arg-type]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_warm_start_continues_weights_and_momentum(blobs: dt.Dataset, scheduler: str) -> None:
    """plan.run(init=previous) equals the plain loop started from the previous weights and velocity."""
    from dagtrain.reference import train_reference

    model = dt.MLP([12, 16, 3], seed=4)
    plan = dt.compile(model, blobs, batch_size=32, epochs=1, lr=0.05, momentum=0.9, window_steps=8)
    first = plan.run(scheduler)
    assert all(v is not None for v in first.velocity)
    second = plan.run(scheduler, init=first)
    expected = train_reference(model, blobs, batch_size=32, epochs=1, lr=0.05, momentum=0.9,
                               init=(first.weights, first.velocity))
    assert weights_equal(second.weights, expected)
    assert not weights_equal(second.weights, first.weights)
    # Weights alone start with zero momentum; the caller's arrays are copied, never written to.
    before = [p.W.copy() for p in first.weights]
    alone = plan.run(scheduler, init=first.weights)
    assert weights_equal(alone.weights, train_reference(model, blobs, batch_size=32, lr=0.05, momentum=0.9,
                                                        init=(first.weights, [None, None])))
    assert all(np.array_equal(a, p.W) for a, p in zip(before, first.weights, strict=True))


def test_warm_start_is_checked(blobs: dt.Dataset, tmp_path: Path) -> None:
    plan = dt.compile(dt.MLP([12, 16, 3]), blobs, max_steps=2)
    good = dt.MLP([12, 16, 3]).init_params()
    with pytest.raises(dt.ConfigError, match=r"init layer L2: W \(16, 4\) and b \(4,\) must be \(16, 3\) and \(3,\)"):
        plan.run("sync", init=dt.MLP([12, 16, 4]).init_params())
    with pytest.raises(dt.ConfigError, match=r"init must hold one Params\(W, b\) per layer \(2 for sizes \[12, 16, 3\]\)"):
        plan.run("sync", init=good[:1])
    bad = [good[0], dt.Params(good[1].W * np.nan, good[1].b)]
    with pytest.raises(dt.ConfigError, match="init layer L2 holds NaN or inf"):
        plan.run("sync", init=bad)
    with pytest.raises(dt.ConfigError, match="not both"):
        plan.run("sync", init=good, resume=tmp_path / "ckpt.zarr")
