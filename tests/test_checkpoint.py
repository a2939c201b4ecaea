"""Checkpoints: written atomically at window boundaries (syncs), resumed bitwise, never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import dagtrain as dt
from dagtrain.execute.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=1)
KW = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9, "window_steps": 10}


class CrashError(Exception):
    """Stands in for the process dying after a given window."""


def crash_after(steps: int) -> Callable[[int, int, dict[str, object]], None]:
    def progress(done: int, total: int, info: dict[str, object]) -> None:
        if done >= steps:
            raise CrashError(done)
    return progress


@pytest.mark.parametrize("schedule", [dt.Sync(), dt.LayerLocal(5, "sharded")], ids=str)
def test_resume_equals_the_uninterrupted_run(blobs: dt.Dataset, tmp_path: Path, schedule: dt.Schedule) -> None:
    plan = dt.compile(MODEL, blobs, schedule, **KW)
    full = plan.run("sync")
    ckpt = tmp_path / "ckpt.zarr"
    with pytest.raises(CrashError):
        plan.run("threads", checkpoint=ckpt, checkpoint_every=2, progress=crash_after(45))
    saved = load_checkpoint(ckpt, plan)
    # Windows of 10, 10, 10, 8 steps per 38-step epoch. Sync: a window end is one sync, so every 2nd window
    # is saved; LayerLocal(5): 2 syncs per window, so every window. The crash comes after the window ending at 48.
    assert saved.step == (38 if isinstance(schedule, dt.Sync) else 48) and len(saved.history) == 1
    resumed = plan.run("sync", resume=ckpt)
    assert weights_equal(resumed.weights, full.weights)
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in full.history]
    assert resumed.steps == full.steps and resumed.samples == full.samples


def test_checkpoints_follow_the_sync_count(blobs: dt.Dataset, tmp_path: Path) -> None:
    """LayerLocal(5) has 2 syncs per 10-step window: checkpoint_every=4 saves every 2nd window end."""
    plan = dt.compile(MODEL, blobs, dt.LayerLocal(5, "sharded"), **KW)
    steps = []

    def record(done: int, total: int, info: dict[str, object]) -> None:
        path = tmp_path / "c.zarr"
        if path.exists():
            steps.append(load_checkpoint(path).step)

    plan.run("sync", checkpoint=tmp_path / "c.zarr", checkpoint_every=4, progress=record)
    assert sorted(set(steps)) == [20, 38, 58, 76]  # syncs: 2, 4 | 6, 8 (epoch end) | 10, 12 | 14, 16 (run end)


def test_checkpoint_refuses_another_plan(blobs: dt.Dataset, tmp_path: Path) -> None:
    plan = dt.compile(MODEL, blobs, **KW)
    plan.run("sync", checkpoint=tmp_path / "c.zarr", checkpoint_every=3)
    other = dt.compile(MODEL, blobs, **{**KW, "lr": 0.2})
    with pytest.raises(dt.ConfigError, match=r"written by a different plan \(lr differ: 0.1 there, 0.2 here\)"):
        other.run("sync", resume=tmp_path / "c.zarr")
    with pytest.raises(dt.StoreNotFoundError, match="no checkpoint at"):
        plan.run("sync", resume=tmp_path / "nothing.zarr")
    with pytest.raises(dt.ConfigError, match="checkpoint_every = 0 must be a positive integer"):
        plan.run("sync", checkpoint=tmp_path / "c.zarr", checkpoint_every=0)


def test_failed_write_keeps_the_previous_checkpoint(blobs: dt.Dataset, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "c.zarr"
    first = Checkpoint(10, MODEL.init_params(), [None] * 3, [], [0.5], 160, {"a": 1})
    save_checkpoint(ckpt, first)
    import zarr

    real = zarr.Group.create_array
    calls = {"n": 0}

    def dying(self: zarr.Group, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zarr.Group, "create_array", dying)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt, Checkpoint(20, MODEL.init_params(seed=9), [None] * 3, [], [], 320, {"a": 1}))
    monkeypatch.undo()
    back = load_checkpoint(ckpt)
    assert back.step == 10 and weights_equal(back.params, first.params)
    assert [p.name for p in tmp_path.iterdir()] == ["c.zarr"]  # no temporary left behind


def test_a_kill_between_the_swap_renames_is_recovered(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.zarr"
    save_checkpoint(ckpt, Checkpoint(10, MODEL.init_params(), [None] * 3, [], [], 0, {}))
    os.replace(ckpt, tmp_path / ".c.zarr.old-1234abcd")  # the new one was never renamed in
    assert load_checkpoint(ckpt).step == 10 and ckpt.exists()


KILL_SCRIPT = """
import sys
import dagtrain as dt
from dagtrain.execute.checkpoint import Checkpoint, save_checkpoint
model = dt.MLP([300, 300, 300, 10], seed=0)
i = 0
while True:
    i += 1
    save_checkpoint(sys.argv[1], Checkpoint(i, model.init_params(seed=i), [None] * 3, [], [], i, {"i": i}))
"""


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # between the swap's two renames
        return None


def test_sigkill_during_writes_never_leaves_half_a_checkpoint(tmp_path: Path) -> None:
    """A real process writes checkpoints in a loop and is killed with SIGKILL at arbitrary moments."""
    ckpt = tmp_path / "c.zarr"
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(ckpt)], stdout=subprocess.DEVNULL)
        before = _mtime(ckpt)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until this process has completed a write, then kill it mid-loop
            if _mtime(ckpt) not in (None, before):
                break
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        back = load_checkpoint(ckpt)  # old or new, never half
        assert weights_equal(back.params, dt.MLP([300, 300, 300, 10], seed=0).init_params(seed=back.step))
        assert back.fingerprint == {"i": back.step} and np.isfinite(back.params[0].W).all()


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagtrain.data import atomic

    target = atomic.atomic_write(tmp_path / "table.csv", "old\n")

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(atomic.os, "replace", fail)
        with pytest.raises(OSError, match="disk full"):
            atomic.atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    atomic.atomic_write(target, b"new\n")
    assert target.read_text() == "new\n"
