"""Checkpoints: the state at a window boundary (always a sync point), written atomically to zarr.

A checkpoint holds every layer's weights and optimizer state, the next step to run, the
history so far and a fingerprint of the plan. It is written into a temporary directory and
swapped in (:func:`dagtrain.data.atomic.atomic_directory`): a kill mid-write leaves the
previous checkpoint whole. A kill between the swap's two renames leaves the previous
checkpoint under a hidden ``.NAME.old-*`` name; :func:`load_checkpoint` recovers it.
Resuming gives bitwise the weights of the uninterrupted run: the batch order depends only
on (seed, epoch), and each window starts from exactly the saved state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from dagtrain.data.atomic import atomic_directory
from dagtrain.errors import ConfigError, CorruptStoreError, StoreNotFoundError
from dagtrain.model.functional import Params

if TYPE_CHECKING:
    from dagtrain.plan import Plan

CHECKPOINT_FORMAT = "dagtrain.checkpoint/1"


@dataclass
class Checkpoint:
    """The state of a run after ``step`` steps."""

    step: int
    params: list[Params]
    velocity: list[Params | None]
    history: list[dict[str, Any]]
    epoch_losses: list[float]
    samples: int
    fingerprint: dict[str, Any]
    schedule_state: dict[str, Any] = field(default_factory=dict)  # what a schedule chose during the run (Adaptive's level)


def fingerprint(plan: Plan) -> dict[str, Any]:
    """What must match for a checkpoint to continue a plan: model, schedule, data and the training settings."""
    cfg = plan.config
    found: dict[str, Any] = json.loads(json.dumps({
        "model": [list(plan.model.sizes), plan.model.activation, plan.model.loss, plan.model.seed, plan.model.dtype],
        "schedule": str(plan.schedule), "data": [str(plan.dataset.path), plan.dataset.split_sizes],
        "batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum, "seed": cfg.seed,
        "window_steps": plan.window_steps}))  # through JSON: tuples become lists, as when read back
    if plan.eval_every is not None:  # only when set, so checkpoints written before the option still match
        found["eval_every"] = plan.eval_every
    return found


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically, replacing an older checkpoint only once the new one is complete."""
    with atomic_directory(path, overwrite=True) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        for layer, (p, v) in enumerate(zip(ckpt.params, ckpt.velocity, strict=True), start=1):
            root.create_array(f"params/L{layer}/W", data=np.asarray(p.W))
            root.create_array(f"params/L{layer}/b", data=np.asarray(p.b))
            if v is not None:
                root.create_array(f"velocity/L{layer}/W", data=np.asarray(v.W))
                root.create_array(f"velocity/L{layer}/b", data=np.asarray(v.b))
        root.attrs.update({"format": CHECKPOINT_FORMAT, "step": ckpt.step, "n_layers": len(ckpt.params),
                           "history": ckpt.history, "epoch_losses": ckpt.epoch_losses, "samples": ckpt.samples,
                           "fingerprint": ckpt.fingerprint, "schedule_state": ckpt.schedule_state})
    return Path(path)


def _recover(target: Path) -> None:
    """Finish a swap that a kill interrupted between its two renames."""
    if target.exists():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], target)


def load_checkpoint(path: str | os.PathLike[str], plan: Plan | None = None) -> Checkpoint:
    """Read a checkpoint; with ``plan``, refuse one written by a different plan (naming what differs)."""
    target = Path(path).expanduser()
    _recover(target)
    if not target.exists():
        raise StoreNotFoundError(f"no checkpoint at {target}; write one with plan.run(checkpoint={str(target)!r})")
    try:
        root: Any = zarr.open_group(str(target), mode="r")
        attrs = dict(root.attrs)
        if attrs.get("format") != CHECKPOINT_FORMAT:
            raise CorruptStoreError(f"{target} is not a dagtrain checkpoint (format {attrs.get('format')!r})")
        n = int(attrs["n_layers"])
        params = [Params(np.asarray(root[f"params/L{i}/W"][...]), np.asarray(root[f"params/L{i}/b"][...]))
                  for i in range(1, n + 1)]
        velocity: list[Params | None] = [
            Params(np.asarray(root[f"velocity/L{i}/W"][...]), np.asarray(root[f"velocity/L{i}/b"][...]))
            if f"velocity/L{i}/W" in root else None for i in range(1, n + 1)]
        ckpt = Checkpoint(int(attrs["step"]), params, velocity, list(attrs["history"]), list(attrs["epoch_losses"]),
                          int(attrs["samples"]), dict(attrs["fingerprint"]), dict(attrs.get("schedule_state", {})))
    except CorruptStoreError:
        raise
    except Exception as exc:
        raise CorruptStoreError(f"cannot read checkpoint {target}: {exc}") from exc
    if plan is not None:
        expected = fingerprint(plan)
        differ = sorted(k for k in expected if expected[k] != ckpt.fingerprint.get(k))
        if differ:
            raise ConfigError(f"checkpoint {target} was written by a different plan ({', '.join(differ)} differ: "
                              f"{ckpt.fingerprint.get(differ[0])!r} there, {expected[differ[0]]!r} here); "
                              "compile the same plan to resume it")
        if ckpt.step not in {w.step0 for w in plan.windows} | {plan.total_steps}:
            raise ConfigError(f"checkpoint {target} stops at step {ckpt.step}, which is not a window boundary of this plan")
    return ckpt
