"""One suite, every scheduler: synchronous, threaded, processes and a real 2-process LocalCluster.

Each must train to exactly the weights of the plain numpy reference loop (same seed and
batch order, BLAS on one thread), so none of them can drift.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import dagtrain as dt
from dagtrain.reference import train_reference
from tests.conftest import make_blobs, weights_equal

SCHEDULERS = ["sync", "threads", "processes", pytest.param("distributed", marks=pytest.mark.cluster)]
CASES = {
    # name: (model sizes, activation, loss, plan keyword arguments)
    "relu-momentum": ([12, 16, 8, 3], "relu", "softmax_xent", {"batch_size": 32, "epochs": 2, "lr": 0.05, "momentum": 0.9}),
    "sigmoid-seed-loss": ([12, 10, 3], "sigmoid", "sigmoid_bce", {"batch_size": 7, "epochs": 1, "lr": 0.1}),
    "tanh-odd-windows": ([12, 9, 3], "tanh", "softmax_xent", {"batch_size": 20, "epochs": 2, "lr": 0.05,
                                                                "max_steps": 45, "segment_steps": 4, "window_steps": 10}),
}


@pytest.fixture(params=SCHEDULERS)
def scheduler(request: pytest.FixtureRequest) -> Any:
    if request.param == "distributed":
        return request.getfixturevalue("local_cluster")
    return request.param


@pytest.mark.parametrize("case", sorted(CASES))
def test_sync_equals_reference_loop_bitwise(scheduler: Any, case: str, blobs: dt.Dataset) -> None:
    sizes, activation, loss, kw = CASES[case]
    model = dt.MLP(sizes, activation=activation, loss=loss, seed=4)
    result = dt.compile(model, blobs, **kw).run(scheduler)
    ref_kw = {k: v for k, v in kw.items() if k not in ("segment_steps", "window_steps")}
    reference = train_reference(model, blobs, **ref_kw)
    assert weights_equal(result.weights, reference)
    steps = kw.get("max_steps") or kw["epochs"] * -(-600 // kw["batch_size"])
    assert result.steps == steps
    assert len(result.history) == (kw["epochs"] if "max_steps" not in kw else 2)
    assert result.test_accuracy is not None and 0 <= result.test_accuracy <= 1


def test_training_learns_and_records_history(scheduler: Any, blobs: dt.Dataset) -> None:
    plan = dt.compile(dt.MLP([12, 16, 3], seed=0), blobs, batch_size=16, epochs=3, lr=0.1, momentum=0.5)
    result = plan.run(scheduler)
    losses = [row["train_loss"] for row in result.history]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert losses[-1] < losses[0] * 0.5
    assert result.test_accuracy is not None and result.test_accuracy > 0.9
    assert result.samples == 3 * 600
    # Every scheduler reports when and where each task ran.
    assert {r.prefix for r in result.tasks} >= {"train", "load", "eval", "out"}
    assert all(0 <= r.start <= r.stop <= result.wall_time + 1 for r in result.tasks)


@pytest.mark.parametrize("schedule", [dt.LayerLocal(1, "shared"), dt.LayerLocal(4, "shared"), dt.LayerLocal(5, "sharded"),
                                      dt.LocalSGD(6, 2), dt.DelayedGradient(2, 2),
                                      dt.Adaptive(dt.LayerLocal(3, "sharded"), levels=1),
                                      dt.Adaptive(dt.LayerLocal(2, "sharded"), levels=2, drift=0.03),
                                      dt.LayerLocal(4, "sharded", damping=0.2, compensate=True),
                                      dt.Hybrid(dt.LayerLocal(3, "sharded"), dt.LocalSGD(6, 2))], ids=str)
def test_concurrent_schedules_are_deterministic(scheduler: Any, schedule: dt.Schedule, blobs: dt.Dataset) -> None:
    """Chains run concurrently, yet the weights never depend on thread or worker timing."""
    model = dt.MLP([12, 16, 8, 3], seed=2)
    kw = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9}
    expected = (train_reference(model, blobs, **kw) if schedule == dt.LayerLocal(1, "shared")
                else dt.compile(model, blobs, schedule, **kw).run("sync").weights)
    assert weights_equal(dt.compile(model, blobs, schedule, **kw).run(scheduler).weights, expected)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for 2 BLAS threads")
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_blas_threads_reach_every_task(scheduler: str, tmp_path: Path) -> None:
    """``blas_threads=2`` changes the bits (BLAS splits the sums), and equals the loop run with 2 threads."""
    x, y = make_blobs(1024, 784, 10, seed=3)  # the MNIST model's shapes: BLAS splits them
    data = dt.to_zarr(x, y, tmp_path / "wide.zarr", 128)
    model = dt.MLP([784, 256, 256, 10], seed=1)
    kw = {"batch_size": 128, "epochs": 1, "lr": 0.05}
    one, two = (train_reference(model, data, **kw, blas_threads=n) for n in (1, 2))
    assert not weights_equal(one, two), "these shapes must be large enough for BLAS to split them"
    assert weights_equal(dt.compile(model, data, **kw).run(scheduler, blas_threads=2).weights, two)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_blas_threads_must_be_a_positive_integer(bad: Any, blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match="blas_threads must be a positive integer"):
        dt.compile(dt.MLP([12, 3]), blobs).run("sync", blas_threads=bad)
