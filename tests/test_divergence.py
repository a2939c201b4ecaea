"""Divergence: NaN or inf is caught at the next sync node (or window end), named, and never checkpointed."""

from __future__ import annotations

import hashlib
import itertools
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dagtrain as dt
from dagtrain.execute.checkpoint import load_checkpoint
from tests.conftest import weights_equal

KW: dict[str, Any] = {"batch_size": 16, "epochs": 2, "momentum": 0.9}
# schedule, an lr at which it diverges on blobs after a window or more, its window, and the step and chain
# where the divergence is caught (Sync: by its loss at the window's end; the others: at a sync node)
DIVERGING = {
    "sync": (dt.Sync(), 1e3, 2, 3, None),
    "layerlocal": (dt.LayerLocal(4, "shared"), 100.0, 8, 20, 1),
    "localsgd": (dt.LocalSGD(4, 2), 30.0, 8, 16, 2),
}


def tree_digest(path: Path) -> str:
    """A hash of every file under ``path``: changes if one byte of the checkpoint does."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def model() -> dt.MLP:
    return dt.MLP([12, 16, 8, 3], seed=2)


@pytest.mark.parametrize("name", sorted(DIVERGING))
def test_divergence_names_step_chain_and_leaves_the_last_checkpoint_intact(name: str, blobs: dt.Dataset,
                                                                            tmp_path: Path) -> None:
    schedule, lr, window, step, chain = DIVERGING[name]
    ckpt = tmp_path / "ckpt"
    digests: list[str] = []
    plan = dt.compile(model(), blobs, schedule, lr=lr, window_steps=window, **KW)
    with pytest.raises(dt.DivergenceError, match=rf"training diverged: .*step {step}\b") as caught:
        plan.run("sync", checkpoint=ckpt, progress=lambda *_: digests.append(tree_digest(ckpt)))
    err = caught.value
    assert (err.step, err.chain) == (step, chain)
    if chain is not None:
        assert f"from chain {chain}" in str(err)
    assert digests, "the run must have checkpointed before it diverged"
    saved = load_checkpoint(ckpt, plan)
    assert f"the last good checkpoint is {ckpt} (step {saved.step}), left intact" in str(err)
    assert err.checkpoint == str(ckpt) and saved.step < step
    assert tree_digest(ckpt) == digests[-1]  # not one byte written after the last good window
    assert all(np.isfinite(p.W).all() and np.isfinite(p.b).all() for p in saved.params)
    # Resuming from it is deterministic: the same divergence at the same place.
    with pytest.raises(dt.DivergenceError) as again:
        plan.run("threads", resume=ckpt)
    assert (again.value.step, again.value.chain, again.value.layer) == (err.step, err.chain, err.layer)


def test_without_a_checkpoint_the_error_says_how_to_keep_one(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.DivergenceError, match=r"the loss of step 3 is nan.*no checkpoint was written; "
                                                 r"pass checkpoint=PATH.*on_divergence='rollback'"):
        dt.compile(model(), blobs, dt.Sync(), lr=1e3, **KW).run("sync")


@pytest.mark.parametrize("scheduler", ["threads", "processes", pytest.param("distributed", marks=pytest.mark.cluster)])
def test_every_scheduler_raises_the_same_divergence(scheduler: str, blobs: dt.Dataset,
                                                    request: pytest.FixtureRequest) -> None:
    """The error crosses process boundaries whole: a worker's DivergenceError keeps its step and chain."""
    target: Any = request.getfixturevalue("local_cluster") if scheduler == "distributed" else scheduler
    schedule, lr, window, step, chain = DIVERGING["layerlocal"]
    with pytest.raises(dt.DivergenceError) as caught:
        dt.compile(model(), blobs, schedule, lr=lr, window_steps=window, **KW).run(target)
    assert (caught.value.step, caught.value.chain, caught.value.layer) == (step, chain, 1)
    restored = pickle.loads(pickle.dumps(caught.value))
    assert (str(restored), restored.step, restored.chain) == (str(caught.value), step, chain)


@pytest.mark.parametrize("name", sorted(DIVERGING))
def test_rollback_halves_the_lr_from_the_last_snapshot_and_finishes(name: str, blobs: dt.Dataset) -> None:
    schedule, lr, window, step, chain = DIVERGING[name]
    result = dt.compile(model(), blobs, schedule, lr=lr, window_steps=window, **KW).run("sync", on_divergence="rollback")
    rollbacks = result.info["rollbacks"]
    assert rollbacks and rollbacks[0]["step"] == step and rollbacks[0]["chain"] == chain
    restart = rollbacks[0]["restart_step"]  # the start of the window that diverged: the snapshot it began from
    assert restart % window == 0 and restart <= step <= restart + window
    # A rollback that diverges again before the same step goes one window further back.
    again = [(a, b) for a, b in itertools.pairwise(rollbacks) if b["step"] <= a["step"]]
    assert all(b["restart_step"] == a["restart_step"] - window for a, b in again)
    assert again or name == "sync"  # the snapshots of LayerLocal and LocalSGD runs had drifted too far already
    assert [r["lr"] for r in rollbacks] == [lr / 2 ** i for i in range(1, len(rollbacks) + 1)]
    assert result.info["lr"] == lr / 2 ** len(rollbacks)
    assert result.steps == 76 and all(np.isfinite(p.W).all() for p in result.weights)
    assert all(np.isfinite(row["train_loss"]) for row in result.history)


def test_a_resumed_rollback_run_keeps_the_lower_lr(blobs: dt.Dataset, tmp_path: Path) -> None:
    """Checkpoints carry the halved lr: resuming after a rollback gives the uninterrupted run's bits."""
    schedule, lr, window, _, _ = DIVERGING["layerlocal"]
    plan = dt.compile(model(), blobs, schedule, lr=lr, window_steps=window, **KW)
    ckpt, copies = tmp_path / "ckpt", tmp_path / "copies"

    def keep(done: int, total: int, info: dict[str, Any]) -> None:
        shutil.rmtree(copies / str(done), ignore_errors=True)  # a rollback reaches a step again: keep the latest
        shutil.copytree(ckpt, copies / str(done))

    full = plan.run("sync", checkpoint=ckpt, progress=keep, on_divergence="rollback")
    after = min(int(p.name) for p in copies.iterdir() if int(p.name) > full.info["rollbacks"][-1]["restart_step"])
    resumed = plan.run("threads", resume=copies / str(after), on_divergence="rollback")
    assert resumed.info["lr"] == full.info["lr"] < lr
    assert weights_equal(resumed.weights, full.weights)


def test_rollback_gives_up_after_ten_halvings(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.DivergenceError, match=r"after 10 rollback\(s\) that each halved the lr"):
        dt.compile(model(), blobs, dt.Sync(), lr=1e30, window_steps=8, **KW).run("sync", on_divergence="rollback")


def test_on_divergence_must_be_a_policy(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match="on_divergence = 'skip' is not a policy; choose 'raise' or 'rollback'"):
        dt.compile(model(), blobs, max_steps=2).run(on_divergence="skip")


def test_cli_reports_rollbacks_and_stops_clearly_on_divergence(blobs: dt.Dataset, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from dagtrain.cli import main

    args = ["train", "--data", blobs.path, "--layers", "12,16,8,3", "--lr", "1e5", "--batch-size", "16",
            "--epochs", "1", "--quiet", "--scheduler", "sync"]
    assert main([*args, "--out", str(tmp_path / "a.zarr")]) == 2
    assert "dagtrain: error: training diverged: the loss of step 4 is nan" in capsys.readouterr().err
    assert main([*args, "--on-divergence", "rollback", "--out", str(tmp_path / "b.zarr")]) == 0
    assert "diverged at step 4: rolled back to step 0, lr 50000\n" in capsys.readouterr().out
