"""Run a Plan on Dask window by window: lower, get, carry the state into the next window."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from dagtrain.data.order import steps_per_epoch
from dagtrain.errors import ConfigError, DivergenceError
from dagtrain.execute.checkpoint import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from dagtrain.execute.divergence import check_window
from dagtrain.execute.lower import dask_key, lower
from dagtrain.execute.place import chain_workers, placed_graph
from dagtrain.execute.program import WindowProgram
from dagtrain.execute.schedulers import open_scheduler
from dagtrain.graph.window import Window
from dagtrain.model.functional import Params
from dagtrain.model.mlp import MLP
from dagtrain.result import TrainResult
from dagtrain.schedules.adaptive import Adaptive

if TYPE_CHECKING:
    from dagtrain.plan import Plan


ON_DIVERGENCE = ("raise", "rollback")
MAX_ROLLBACKS = 10  # lr / 1024: a run that still diverges has a problem a smaller step will not fix


@dataclass
class RunState:
    """Everything the run loop carries from window to window, as it stands at a window boundary (a sync point)."""

    index: int  # the next window to run, a position in the run's list of windows
    params: list[Any]
    velocity: list[Any]
    done: int = 0
    samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    sync_steps: list[int] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    level: int = 0
    syncs_since: int = 0

    def snapshot(self) -> RunState:
        """A copy to roll back to; the arrays are shared (tasks never write into an array they read)."""
        return replace(self, history=list(self.history), epoch_losses=list(self.epoch_losses),
                       sync_steps=list(self.sync_steps), decisions=list(self.decisions))


def execute(plan: Plan, scheduler: Any = None, *,
            progress: Callable[[int, int, dict[str, Any]], None] | None = None,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 1,
            resume: str | os.PathLike[str] | None = None, blas_threads: int = 1,
            on_divergence: str = "raise", init: tuple[list[Any], list[Any]] | None = None) -> TrainResult:
    """Train ``plan`` on ``scheduler``; see :meth:`dagtrain.plan.Plan.run`. ``init``: (params, velocity) to start from."""
    model, cfg = plan.model, plan.config
    L = model.n_layers
    windows = plan.windows
    total = sum(w.n_steps for w in windows)
    run = RunState(0, model.init_params(), [None] * L) if init is None else RunState(0, *init)
    saved_state: dict[str, Any] = {}
    last_good: tuple[str, int] | None = None  # (checkpoint path, its step)
    if resume is not None:
        saved = load_checkpoint(resume, plan)
        run = RunState(0, saved.params, saved.velocity, saved.step, saved.samples, saved.history, saved.epoch_losses)
        saved_state, last_good = saved.schedule_state, (str(resume), saved.step)
        windows = [w for w in windows if w.step0 >= saved.step]
    n_train = plan.dataset.size("train")
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    adaptive = plan.schedule if isinstance(plan.schedule, Adaptive) and plan.schedule.on_drift else None
    run.level = int(saved_state.get("level", 0)) if adaptive is not None else 0
    lr_scale = float(saved_state.get("lr_scale", 1.0))
    rollbacks: list[dict[str, Any]] = []
    marks: list[RunState] = []  # the state at the start of each recent window: where a rollback returns to
    streak = 0  # rollbacks since the run last got past the step that diverged
    frontier = -1  # that step
    submitted = 0  # graphs submitted so far: each takes fresh keys, so a rerun window never meets an old one
    with open_scheduler(scheduler, blas_threads=blas_threads) as sched, sched.trace() as tasks:
        # A local scheduler runs the chains as one lane per worker (pack_lanes); on a cluster each chain is
        # pinned to a worker instead (placement). Programs are built once per window shape, before the clock starts.
        lanes = sched.workers if sched.client is None else 1
        programs = [plan.program(w, workers=lanes) for w in windows]
        if adaptive is not None:  # the run picks each window's level: every level's programs are built now
            levelled = {(w.index, lv): plan.program(replace(w, level=lv), workers=lanes)
                        for w in windows for lv in range(adaptive.levels + 1)}
        costs = plan.chain_costs() if sched.client is not None else {}  # for pinning chains; builds a graph
        resubmitted = 0
        chains = plan.schedule.n_chains(model)
        placement = chain_workers(list(sched.addresses), chains, costs) if sched.addresses else {}
        start = time.perf_counter()
        while run.index < len(windows):
            w, program = windows[run.index], programs[run.index]
            if adaptive is not None:
                w = replace(w, level=run.level)
                program = levelled[(w.index, run.level)]
            state = {}
            for layer in range(1, L + 1):
                state[(program.input_key, f"params/L{layer}")] = run.params[layer - 1]
                state[(program.input_key, f"velocity/L{layer}")] = run.velocity[layer - 1]
            run_cfg = cfg if lr_scale == 1.0 else replace(cfg, lr=cfg.lr * lr_scale)

            def graph(attempt: int, program: WindowProgram = program, w: Window = w,
                      state: dict[tuple[str, str], Any] = state, run_cfg: Any = run_cfg) -> tuple[dict[str, Any], list[str]]:
                keys = [dask_key("out", w, attempt)] + ([dask_key("eval", w, attempt)] if program.eval_key else [])
                return lower(program, run_cfg, w, state, attempt), keys

            try:
                if sched.client is not None and costs:
                    results, placement, again = run_pinned(sched.client, graph, chains, costs, placement, submitted)
                    resubmitted += again
                    submitted += again
                else:
                    results = sched.get(*graph(submitted))
                out = results[0]
                new_params = [out[(program.output_key, f"params/L{layer}")] for layer in range(1, L + 1)]
                losses = [out[(program.output_key, f"loss/{s}")] for s in range(w.n_steps)]
                check_window(w.step0, new_params, losses)
            except DivergenceError as err:
                if on_divergence == "raise" or len(rollbacks) >= MAX_ROLLBACKS:
                    raise _with_checkpoint(err, last_good, len(rollbacks)) from err
                # Back to the snapshot this window began from, or one window further back for every
                # rollback that has not yet got the run past the step that diverged; half the lr each time.
                marks.append(run.snapshot())
                streak = streak + 1 if err.step is not None and err.step <= frontier else 1
                frontier = max(frontier, err.step if err.step is not None else w.stop)
                run = marks[-min(streak, len(marks))].snapshot()
                del marks[-min(streak, len(marks)):]
                lr_scale /= 2
                rollbacks.append({"step": err.step, "chain": err.chain, "layer": err.layer,
                                  "restart_step": run.done, "lr": cfg.lr * lr_scale})
                continue
            finally:
                submitted += 1
            if on_divergence == "rollback":  # only a rollback needs the snapshots (each keeps a window's weights alive)
                marks = [*marks[-MAX_ROLLBACKS:], run.snapshot()]
            before = run.params
            run.index += 1
            run.params = new_params
            run.velocity = [out[(program.output_key, f"velocity/L{layer}")] for layer in range(1, L + 1)]
            run.epoch_losses += losses
            run.done += w.n_steps
            run.sync_steps += plan.schedule.sync_steps(w, model)
            if adaptive is not None:
                drift = adaptive.interval_drift(before, run.params, w)
                run.decisions.append({"window": w.index, "step": w.step0, "k": adaptive.k_of_level(run.level),
                                      "drift": drift})
                run.level = adaptive.next_level(run.level, drift)
            run.samples += min(n_train, (w.batch0 + w.n_steps) * cfg.batch_size) - w.batch0 * cfg.batch_size
            info: dict[str, Any] = {"epoch": w.epoch, "loss": run.epoch_losses[-1]}
            if program.eval_key:
                metrics = results[1][(program.eval_key, "metrics")]
                row = {"epoch": epochs_done(w, per_epoch), "step": w.stop,
                       "train_loss": sum(run.epoch_losses) / len(run.epoch_losses),
                       "test_loss": metrics.get("loss"), "test_accuracy": metrics.get("accuracy"),
                       "seconds": time.perf_counter() - start}
                run.history.append(row)
                info["test_accuracy"] = row["test_accuracy"]
                run.epoch_losses = []
            # Syncs since the last checkpoint: a LayerLocal window holds ceil(n_steps / k) sync nodes; under
            # Sync every window end is the only sync point. Checkpoints are taken at window ends, at the
            # first one after checkpoint_every syncs.
            run.syncs_since += len({ins.key.split("@")[0] for t in program.tasks for ins in t.instructions
                                    if ins.kind == "sync"}) or 1  # a lane's copy (sync:s20@lane1) is the same sync
            if checkpoint is not None and (run.syncs_since >= checkpoint_every or run.done == total):
                run.syncs_since = 0
                run_state: dict[str, Any] = {"level": run.level} if adaptive else {}
                if lr_scale != 1.0:
                    run_state["lr_scale"] = lr_scale
                save_checkpoint(checkpoint, Checkpoint(run.done, run.params, run.velocity, run.history,
                                                       run.epoch_losses, run.samples, fingerprint(plan), run_state))
                last_good = (str(checkpoint), run.done)
            if progress is not None:
                progress(run.done, total, info)
        wall = time.perf_counter() - start
    return TrainResult(weights=run.params, velocity=run.velocity, history=run.history, steps=run.done,
                       samples=run.samples, wall_time=wall,
                       tasks=tasks, scheduler=sched.name,
                       info={"workers": sched.workers, "segment_steps": plan.segment_steps,
                             "window_steps": plan.window_steps, "placement": placement, "lanes": lanes,
                             "resubmitted_windows": resubmitted,
                             "sync_steps": run.sync_steps if adaptive is not None else plan.sync_steps(),
                             "adaptive": run.decisions, "rollbacks": rollbacks, "lr": cfg.lr * lr_scale,
                             "schedule": str(plan.schedule)})


def initial_state(model: MLP, init: TrainResult | Sequence[Params]) -> tuple[list[Any], list[Any]]:
    """The (params, velocity) a warm start begins from: checked against ``model``, copied, cast to its dtype.

    ``init`` is a list of ``Params`` per layer (velocity starts at zero) or a TrainResult
    (its final momentum velocity is carried over too).
    """
    weights = init.weights if isinstance(init, TrainResult) else init
    velocity = list(init.velocity) if isinstance(init, TrainResult) and init.velocity else [None] * model.n_layers
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != model.n_layers:
        raise ConfigError(f"init must hold one Params(W, b) per layer ({model.n_layers} for sizes {list(model.sizes)}), "
                          f"got {type(weights).__name__}")
    params = []
    for layer, p in enumerate(weights, start=1):
        shapes = ((model.sizes[layer - 1], model.sizes[layer]), (model.sizes[layer],))
        W, b = (np.array(a, dtype=model.dtype) for a in p)  # copies: the run never shares the caller's arrays
        if (W.shape, b.shape) != shapes:
            raise ConfigError(f"init layer L{layer}: W {W.shape} and b {b.shape} must be {shapes[0]} and {shapes[1]} "
                              f"for sizes {list(model.sizes)}")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ConfigError(f"init layer L{layer} holds NaN or inf; start from finite weights")
        params.append(Params(W, b))
    return params, velocity


def _with_checkpoint(err: DivergenceError, last_good: tuple[str, int] | None, rollbacks: int) -> DivergenceError:
    """``err`` with the last good checkpoint and the way out added to its message."""
    tried = f" after {rollbacks} rollback(s) that each halved the lr" if rollbacks else ""
    if last_good is None:
        where = ("no checkpoint was written; pass checkpoint=PATH to keep one, lower the lr, "
                 "or run with on_divergence='rollback'")
    else:
        where = (f"the last good checkpoint is {last_good[0]} (step {last_good[1]}), left intact; resume from it "
                 "with a lower lr, or run with on_divergence='rollback'")
    return DivergenceError(f"{err.args[0]}{tried}; {where}", step=err.step, chain=err.chain, layer=err.layer,
                           checkpoint=None if last_good is None else last_good[0])


def epochs_done(w: Window, per_epoch: int) -> int | float:
    """Epochs completed at the end of window ``w``: a whole number at an epoch's end, else a fraction (4 decimals)."""
    done = w.epoch + (w.batch0 + w.n_steps) / per_epoch
    return int(done) if done == int(done) else round(done, 4)


def run_pinned(client: Any, graph: Callable[[int], tuple[dict[str, Any], list[str]]], n_chains: int,
               costs: dict[int, float], placement: dict[int, str], first_attempt: int = 0,
               poll: float = 0.25) -> tuple[list[Any], dict[int, str], int]:
    """Run one window on a cluster with every chain strictly pinned to its worker.

    Returns the results, the placement used and how many times the window was resubmitted.

    A pinned task can only run on its worker, so if that worker leaves mid-window (killed,
    restarted under a new address) the window is cancelled and resubmitted, pinned to the
    workers now alive. Windows are pure functions of their input state: rerunning one
    changes no bit of the result. ``graph(attempt)`` gives the window's graph and output
    keys; a resubmission uses fresh keys, so the cancelled attempt cannot touch it. The first
    submission is attempt ``first_attempt`` (a window run again after a divergence starts past
    the attempts it used before).
    """
    from distributed import wait

    resubmits = 0
    while True:
        dsk, keys = graph(first_attempt + resubmits)
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
