"""Run a Plan on Dask window by window: lower, get, carry the state into the next window."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagtrain.execute.checkpoint import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from dagtrain.execute.lower import dask_key, lower
from dagtrain.execute.place import chain_workers, placed_graph
from dagtrain.execute.schedulers import open_scheduler
from dagtrain.result import TrainResult

if TYPE_CHECKING:
    from dagtrain.plan import Plan


def execute(plan: Plan, scheduler: Any = None, *,
            progress: Callable[[int, int, dict[str, Any]], None] | None = None,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 1,
            resume: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train ``plan`` on ``scheduler``; see :meth:`dagtrain.plan.Plan.run`."""
    model, cfg = plan.model, plan.config
    L = model.n_layers
    params: list[Any] = model.init_params()
    velocity: list[Any] = [None] * L
    windows = plan.windows
    total = sum(w.n_steps for w in windows)
    history: list[dict[str, Any]] = []
    epoch_losses: list[float] = []
    done = samples = 0
    if resume is not None:
        saved = load_checkpoint(resume, plan)
        params, velocity, history, epoch_losses = saved.params, saved.velocity, saved.history, saved.epoch_losses
        done, samples = saved.step, saved.samples
        windows = [w for w in windows if w.step0 >= saved.step]
    n_train = plan.dataset.size("train")
    programs = [plan.program(w) for w in windows]  # built once per window shape, before the clock starts
    with open_scheduler(scheduler) as sched, sched.trace() as tasks:
        placement = chain_workers(list(sched.addresses), L, plan.chain_costs()) if sched.addresses else {}
        start = time.perf_counter()
        for w, program in zip(windows, programs, strict=True):
            state = {}
            for layer in range(1, L + 1):
                state[(program.input_key, f"params/L{layer}")] = params[layer - 1]
                state[(program.input_key, f"velocity/L{layer}")] = velocity[layer - 1]
            dsk = lower(program, cfg, w, state)
            keys = [dask_key("out", w)] + ([dask_key("eval", w)] if program.eval_key else [])
            results = sched.get(placed_graph(dsk, placement) if placement else dsk, keys)
            out = results[0]
            params = [out[(program.output_key, f"params/L{layer}")] for layer in range(1, L + 1)]
            velocity = [out[(program.output_key, f"velocity/L{layer}")] for layer in range(1, L + 1)]
            epoch_losses += [out[(program.output_key, f"loss/{s}")] for s in range(w.n_steps)]
            done += w.n_steps
            samples += min(n_train, (w.batch0 + w.n_steps) * cfg.batch_size) - w.batch0 * cfg.batch_size
            info: dict[str, Any] = {"epoch": w.epoch, "loss": epoch_losses[-1]}
            if program.eval_key:
                metrics = results[1][(program.eval_key, "metrics")]
                row = {"epoch": w.epoch + 1, "step": w.stop,
                       "train_loss": sum(epoch_losses) / len(epoch_losses),
                       "test_loss": metrics.get("loss"), "test_accuracy": metrics.get("accuracy"),
                       "seconds": time.perf_counter() - start}
                history.append(row)
                info["test_accuracy"] = row["test_accuracy"]
                epoch_losses = []
            if checkpoint is not None and ((w.index + 1) % checkpoint_every == 0 or done == total):
                save_checkpoint(checkpoint, Checkpoint(done, params, velocity, history, epoch_losses, samples,
                                                       fingerprint(plan)))
            if progress is not None:
                progress(done, total, info)
        wall = time.perf_counter() - start
    return TrainResult(weights=params, history=history, steps=done, samples=samples, wall_time=wall, tasks=tasks,
                       scheduler=sched.name, info={"workers": sched.workers, "segment_steps": plan.segment_steps,
                                                   "window_steps": plan.window_steps, "placement": placement,
                                                   "schedule": str(plan.schedule)})
