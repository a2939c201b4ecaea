"""Determinism matrix: one seed, the same bits on every scheduler and from every checkpoint.

The conformance suite runs each schedule start to end on every scheduler. This file adds the
other half: a run resumed from *any* of its checkpoints, on any scheduler, ends with bitwise the
weights, history and counts of the uninterrupted run. Checkpoint ``i`` is resumed on scheduler
``i mod 4`` (synchronous, threads, processes, a 2-process LocalCluster), so every scheduler
resumes from several points of every schedule.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import dagtrain as dt
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=5)
KW: dict[str, Any] = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9, "window_steps": 12}
SCHEDULES = [dt.Sync(), dt.LayerLocal(4, "shared"), dt.LayerLocal(6, "sharded"), dt.LocalSGD(6, 2),
             dt.Adaptive(dt.LayerLocal(2, "sharded"), levels=2, drift=0.03)]


def comparable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows without their wall-clock seconds."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.cluster
@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_resume_from_every_checkpoint_on_every_scheduler(schedule: dt.Schedule, blobs: dt.Dataset, tmp_path: Path,
                                                         local_cluster: Any) -> None:
    schedulers: list[Any] = ["sync", "threads", "processes", local_cluster]
    plan = dt.compile(MODEL, blobs, schedule, **KW)
    ckpt, copies = tmp_path / "ckpt", tmp_path / "copies"

    def keep(done: int, total: int, info: dict[str, Any]) -> None:
        shutil.copytree(ckpt, copies / f"{done:04d}")

    full = plan.run("threads", checkpoint=ckpt, progress=keep)
    saved = sorted(copies.iterdir())
    assert len(saved) == len(plan.windows) >= 6  # one checkpoint at every window end
    for i, path in enumerate(saved):
        resumed = plan.run(schedulers[i % len(schedulers)], resume=path)
        where = f"resumed from step {path.name} on {schedulers[i % len(schedulers)]}"
        assert weights_equal(resumed.weights, full.weights), where
        assert comparable(resumed.history) == comparable(full.history), where
        assert (resumed.steps, resumed.samples) == (full.steps, full.samples), where
        step = int(path.name)  # the syncs from there on (Adaptive's were chosen by the run) are the same
        assert [s for s in resumed.info["sync_steps"] if s > step] == [s for s in full.info["sync_steps"] if s > step], where


@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_the_same_seed_gives_the_same_bits_twice(schedule: dt.Schedule, blobs: dt.Dataset) -> None:
    """Nothing hidden (time, thread ids, dict order of a fresh process) enters the math: two threaded runs agree."""
    first, second = (dt.compile(MODEL, blobs, schedule, **KW).run("threads") for _ in range(2))
    assert weights_equal(first.weights, second.weights)
    other_seed = dt.compile(dt.MLP([12, 16, 8, 3], seed=6), blobs, schedule, **KW).run("threads")
    assert not weights_equal(first.weights, other_seed.weights)  # and the seed does matter
