"""Run a Plan on Dask window by window: lower, get, carry the state into the next window."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dagtrain.data.order import steps_per_epoch
from dagtrain.execute.checkpoint import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from dagtrain.execute.lower import dask_key, lower
from dagtrain.execute.place import chain_workers, placed_graph
from dagtrain.execute.program import WindowProgram
from dagtrain.execute.schedulers import open_scheduler
from dagtrain.graph.window import Window
from dagtrain.result import TrainResult
from dagtrain.schedules.adaptive import Adaptive

if TYPE_CHECKING:
    from dagtrain.plan import Plan


def execute(plan: Plan, scheduler: Any = None, *,
            progress: Callable[[int, int, dict[str, Any]], None] | None = None,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 1,
            resume: str | os.PathLike[str] | None = None, blas_threads: int = 1) -> TrainResult:
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
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    adaptive = plan.schedule if isinstance(plan.schedule, Adaptive) and plan.schedule.on_drift else None
    level = 0 if resume is None or adaptive is None else int(saved.schedule_state.get("level", 0))
    programs = [plan.program(w) for w in windows]  # built once per window shape, before the clock starts
    if adaptive is not None:  # the run picks each window's level: every level's programs are built now
        levelled = {(w.index, lv): plan.program(replace(w, level=lv)) for w in windows for lv in range(adaptive.levels + 1)}
    decisions: list[dict[str, Any]] = []
    sync_steps: list[int] = []
    with open_scheduler(scheduler, blas_threads=blas_threads) as sched, sched.trace() as tasks:
        costs = plan.chain_costs()
        resubmitted = syncs_since = 0
        chains = plan.schedule.n_chains(model)
        placement = chain_workers(list(sched.addresses), chains, costs) if sched.addresses else {}
        start = time.perf_counter()
        for w, program in zip(windows, programs, strict=True):
            if adaptive is not None:
                w = replace(w, level=level)
                program = levelled[(w.index, level)]
            before = params
            state = {}
            for layer in range(1, L + 1):
                state[(program.input_key, f"params/L{layer}")] = params[layer - 1]
                state[(program.input_key, f"velocity/L{layer}")] = velocity[layer - 1]
            def graph(attempt: int, program: WindowProgram = program, w: Window = w,
                      state: dict[tuple[str, str], Any] = state) -> tuple[dict[str, Any], list[str]]:
                keys = [dask_key("out", w, attempt)] + ([dask_key("eval", w, attempt)] if program.eval_key else [])
                return lower(program, cfg, w, state, attempt), keys

            if sched.client is not None and costs:
                results, placement, again = run_pinned(sched.client, graph, chains, costs, placement)
                resubmitted += again
            else:
                results = sched.get(*graph(0))
            out = results[0]
            params = [out[(program.output_key, f"params/L{layer}")] for layer in range(1, L + 1)]
            velocity = [out[(program.output_key, f"velocity/L{layer}")] for layer in range(1, L + 1)]
            epoch_losses += [out[(program.output_key, f"loss/{s}")] for s in range(w.n_steps)]
            done += w.n_steps
            sync_steps += plan.schedule.sync_steps(w, model)
            if adaptive is not None:
                drift = adaptive.interval_drift(before, params, w)
                decisions.append({"window": w.index, "step": w.step0, "k": adaptive.k_of_level(level), "drift": drift})
                level = adaptive.next_level(level, drift)
            samples += min(n_train, (w.batch0 + w.n_steps) * cfg.batch_size) - w.batch0 * cfg.batch_size
            info: dict[str, Any] = {"epoch": w.epoch, "loss": epoch_losses[-1]}
            if program.eval_key:
                metrics = results[1][(program.eval_key, "metrics")]
                row = {"epoch": epochs_done(w, per_epoch), "step": w.stop,
                       "train_loss": sum(epoch_losses) / len(epoch_losses),
                       "test_loss": metrics.get("loss"), "test_accuracy": metrics.get("accuracy"),
                       "seconds": time.perf_counter() - start}
                history.append(row)
                info["test_accuracy"] = row["test_accuracy"]
                epoch_losses = []
            # Syncs since the last checkpoint: a LayerLocal window holds ceil(n_steps / k) sync nodes; under
            # Sync every window end is the only sync point. Checkpoints are taken at window ends, at the
            # first one after checkpoint_every syncs.
            syncs_since += sum(1 for t in program.tasks if t.name.startswith("sync-")) or 1
            if checkpoint is not None and (syncs_since >= checkpoint_every or done == total):
                syncs_since = 0
                save_checkpoint(checkpoint, Checkpoint(done, params, velocity, history, epoch_losses, samples,
                                                       fingerprint(plan), {"level": level} if adaptive else {}))
            if progress is not None:
                progress(done, total, info)
        wall = time.perf_counter() - start
    return TrainResult(weights=params, history=history, steps=done, samples=samples, wall_time=wall, tasks=tasks,
                       scheduler=sched.name, info={"workers": sched.workers, "segment_steps": plan.segment_steps,
                                                   "window_steps": plan.window_steps, "placement": placement,
                                                   "resubmitted_windows": resubmitted,
                                                   "sync_steps": sync_steps if adaptive is not None else plan.sync_steps(),
                                                   "adaptive": decisions,
                                                   "schedule": str(plan.schedule)})


def epochs_done(w: Window, per_epoch: int) -> int | float:
    """Epochs completed at the end of window ``w``: a whole number at an epoch's end, else a fraction (4 decimals)."""
    done = w.epoch + (w.batch0 + w.n_steps) / per_epoch
    return int(done) if done == int(done) else round(done, 4)


def run_pinned(client: Any, graph: Callable[[int], tuple[dict[str, Any], list[str]]], n_chains: int,
               costs: dict[int, float], placement: dict[int, str], poll: float = 0.25) -> tuple[list[Any], dict[int, str], int]:
    """Run one window on a cluster with every chain strictly pinned to its worker.

    Returns the results, the placement used and how many times the window was resubmitted.

    A pinned task can only run on its worker, so if that worker leaves mid-window (killed,
    restarted under a new address) the window is cancelled and resubmitted, pinned to the
    workers now alive. Windows are pure functions of their input state: rerunning one
    changes no bit of the result. ``graph(attempt)`` gives the window's graph and output
    keys; a resubmission uses fresh keys, so the cancelled attempt cannot touch it.
    """
    from distributed import wait

    resubmits = 0
    while True:
        dsk, keys = graph(resubmits)
        futures = client.get(placed_graph(dsk, placement), keys, sync=False)
        try:
            while True:
                try:
                    wait(futures, timeout=poll)  # type: ignore[no-untyped-call]
                    return client.gather(futures), placement, resubmits
                except TimeoutError:
                    alive = set(client.scheduler_info(n_workers=-1).get("workers", {}))
                    if not set(placement.values()) <= alive:
                        break
        finally:
            client.cancel(futures)
        resubmits += 1
        client.wait_for_workers(1, timeout=60)
        placement = chain_workers(sorted(client.scheduler_info(n_workers=-1).get("workers", {})), n_chains, costs)
