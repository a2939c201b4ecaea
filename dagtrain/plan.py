"""``dagtrain.compile``: a model, data, a schedule and a training plan become a Plan.

A Plan holds no graph of the whole run. It knows the run's windows and builds, for each
window shape, the fine graph (for analysis) and the fused program (for Dask) once.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx

from dagtrain.analysis.draw import draw
from dagtrain.analysis.explain import explain
from dagtrain.analysis.predict import (
    CostModel,
    critical_seconds,
    lane_shape,
    list_schedule,
    makespan,
    measure_contention,
    measure_threaded,
    measured_durations,
    predicted_makespan,
)
from dagtrain.analysis.summary import Analysis, GraphStats, analyze
from dagtrain.data.order import steps_per_epoch
from dagtrain.data.store import Dataset
from dagtrain.errors import ConfigError
from dagtrain.execute.fuse import fuse
from dagtrain.execute.lanes import pack_lanes, sync_per_lane
from dagtrain.execute.ops import RunConfig, eval_part_sizes
from dagtrain.execute.program import WindowProgram, compile_program
from dagtrain.graph.validate import validate
from dagtrain.graph.window import Window, plan_windows, total_steps
from dagtrain.model.functional import Params
from dagtrain.model.mlp import MLP
from dagtrain.result import TrainResult
from dagtrain.schedules.base import Schedule
from dagtrain.schedules.sync import Sync

# About 30 ms of work per fused task at the ~70 GFLOP/s one core sustains on the MLP's
# matmuls (notes/measurements.md): threaded overhead (~70 us/task) stays well under 1%.
DEFAULT_TASK_FLOPS = 2e9
SEGMENTS_PER_WINDOW = 16
MAX_WINDOW_STEPS = 1024


def _positive_int(name: str, value: Any, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} = {value!r} must be a positive integer, e.g. {name}={example}")
    return value


def step_flops(model: MLP, batch_size: int) -> float:
    """Flops of one training step: forward (1x), backward (2x, 1x for the first layer), update."""
    fwd = sum(model.layer_flops(layer, batch_size) for layer in range(1, model.n_layers + 1))
    return 3 * fwd - model.layer_flops(1, batch_size)


@dataclass
class Plan:
    """A compiled training run. Inspect it (``summary``, ``graph``, ``task_graph``) or ``run`` it."""

    model: MLP
    dataset: Dataset
    schedule: Schedule
    config: RunConfig
    epochs: int
    max_steps: int | None
    segment_steps: int
    window_steps: int
    eval_every: int | None = None
    _programs: dict[Hashable, WindowProgram] = field(default_factory=dict, repr=False)

    @property
    def windows(self) -> list[Window]:
        """The run's windows, in order."""
        return list(plan_windows(self.dataset.size("train"), self.config.batch_size, self.epochs,
                                 self.max_steps, self.window_steps, self.eval_every))

    @property
    def total_steps(self) -> int:
        """Training steps in the whole run."""
        return sum(w.n_steps for w in self.windows)

    def graph(self, window: int = 0, *, workers: int = 1) -> nx.DiGraph:
        """The fine graph of window ``window`` (one node per op), validated; nothing runs.

        With ``workers`` > 1, independent chains are packed into that many lanes by control
        edges (:func:`dagtrain.execute.lanes.pack_lanes`), as a run on a local scheduler with
        that many workers executes them.
        """
        return self._build(self._window(window), _positive_int("workers", workers, "2"))

    @property
    def passes(self) -> list[str]:
        """The passes that compile a window, in order: the schedule's graph passes, lanes and a sync per lane, then fusion.

        ``pack_lanes`` and ``sync_per_lane`` change a graph only for several workers on a local scheduler.
        """
        return [*self.schedule.passes(), "pack_lanes", "sync_per_lane", "fuse"]

    def graph_before(self, pass_name: str, window: int = 0) -> nx.DiGraph:
        """The fine graph of window ``window`` as it was just before pass ``pass_name`` ran (lanes: one worker's)."""
        if pass_name in ("pack_lanes", "sync_per_lane", "fuse"):
            return self.graph(window)
        w = self._window(window)
        return self.schedule.build(self.model, w, self.config.batch_size, eval_part_sizes(self.dataset, self.config.eval_split),
                                   stop_before=pass_name)

    def analyze(self, workers: int = 2, *, cost: CostModel | None = None, result: TrainResult | None = None) -> Analysis:
        """Work, critical path, parallelism, width and the predicted wall time on ``workers`` workers; nothing runs.

        Durations come from ``cost`` (default :class:`CostModel`) or, given the ``result`` of a
        run of this plan, from its measured task times. For a schedule with syncs the seed's
        formula ``T_seq / min(L, W) + syncs * t_sync`` is predicted beside it, with T_seq the
        same run under Sync on one worker and t_sync two task overheads and two hand-overs
        (``cost.latency``): into the sync and out of it.
        """
        _positive_int("workers", workers, "2")
        cost = cost or CostModel()
        stats = self.stats()
        predicted, span_seconds = self._predict(workers, cost, result)
        formula = t_sync = None
        syncs = stats.ops.get("sync", 0)
        if syncs:
            t_seq = replace(self, schedule=Sync(), _programs={})._predict(1, cost, None)[0]
            t_sync = 2 * (cost.overhead + cost.latency)
            formula = t_seq / min(self.schedule.n_chains(self.model), workers) + syncs * t_sync
        widths = [len(gen) for gen in nx.topological_generations(self.graph(0))]
        return Analysis(str(self.schedule), workers, stats.work, stats.span, widths, predicted, formula, t_sync, syncs,
                        len(self.windows), result is not None, span_seconds)

    def measure_cost(self, workers: int = 2, *, rounds: int = 3) -> CostModel:
        """A cost model of this plan on Dask's threaded scheduler with ``workers`` threads, measured on this machine now.

        Times the model's own training step (one batch of the training split, BLAS on one
        thread; with layer chains, as LayerLocal's, each chain's step in turn) in a synthetic
        Dask graph shaped like this plan's lanes (``lane_shape``; a schedule without
        independent chains, such as Sync, gets two-step tasks): the step's flops rate on one
        thread, the contention of ``workers`` threads (for Sync, of two threads running the
        step freely) and the scheduler's mean hand-over latency;
        ready tasks go in arbitrary order, as Dask's local schedulers take them. One worker
        is the synchronous scheduler: no contention, no hand-over. Nothing of a run is used:
        ``plan.analyze(workers=2, cost=plan.measure_cost())`` predicts before training. Each
        of the ``rounds`` (median taken) runs about 400 training steps (at least two sync
        intervals' worth) on one thread and again on ``workers``: seconds for an MLP like
        784-256x3-10 at batch 128. See
        :func:`dagtrain.analysis.predict.measure_threaded`.
        """
        from threadpoolctl import threadpool_limits

        from dagtrain.reference import training_step

        _positive_int("workers", workers, "2")
        _positive_int("rounds", rounds, "3")
        data, batch = self.dataset, self.config.batch_size
        x, y = data.read_chunks("train", range(min(-(-batch // data.chunk_size), data.n_chunks("train"))))
        ops = self.graph(0)
        updates = [d for _, d in ops.nodes(data=True) if d["kind"] == "update" and d.get("chain") is not None]
        if updates and all(d["layer"] == d["chain"] for d in updates):  # layer chains (LayerLocal): each trains its own layer
            chain_steps = {(d["chain"], d["step"]) for d in updates}
            step = training_step(self.model, x[:batch], y[:batch], self.config.lr, chains=range(1, self.model.n_layers + 1))
            step_flops = sum(self.chain_costs(0).values()) / len(chain_steps)
        else:  # a whole training step (Sync; LocalSGD's replicas)
            step = training_step(self.model, x[:batch], y[:batch], self.config.lr)
            sync = replace(self, schedule=Sync(), _programs={})
            step_flops = sum(d["cost"] for t, d in sync.task_graph(0).nodes(data=True) if t.startswith("train"))
            step_flops /= sync.windows[0].n_steps
        with threadpool_limits(limits=1, user_api="blas"):
            if ops.graph.get("chains_independent") and workers > 1:
                shape = lane_shape(self.graph(0, workers=workers), self.task_graph(0, workers=workers), workers)
                per_interval = int(shape["per_interval"])
                steps = shape["steps_per_task"] * per_interval * workers  # per interval; about 400 steps in all
                cost = measure_threaded(step, workers=workers, steps_per_task=shape["steps_per_task"],
                                        per_interval=per_interval, intervals=max(round(400 / steps), 2), rounds=rounds,
                                        step_flops=step_flops)
            else:
                cost = measure_threaded(step, workers=workers, rounds=rounds, step_flops=step_flops)
                if workers > 1:  # no lanes: two threads running the step freely
                    cost = replace(cost, contention=measure_contention(step, rounds=rounds))
        if workers == 1:
            cost = replace(cost, contention=1.0, latency=0.0)
        return replace(cost, ready_order="arbitrary")

    def _predict(self, workers: int, cost: CostModel, result: TrainResult | None) -> tuple[float, float]:
        """(predicted wall time, critical path in seconds) of the whole run, one window shape scheduled at a time."""
        total = span = 0.0
        done: dict[Hashable, tuple[float, float]] = {}
        for w in self.windows:
            key = self.schedule.shape_key(w, self.model)
            if key not in done:
                canonical = self.schedule.canonical_window(w, self.model)
                tasks = fuse(self._build(canonical, workers), canonical.step0, self.segment_steps)
                measured = measured_durations(result.tasks, w.index) if result is not None else None
                done[key] = (predicted_makespan(tasks, workers, cost, measured), critical_seconds(tasks, cost, measured))
            total += done[key][0]
            span += done[key][1]
        return total, span

    def actions(self, window: int = 0) -> dict[str, list[str]]:
        """The schedule as data: for each chain (``chain1``..., or ``main`` under Sync; ``syncs``), its ops in order.

        Plain lists of op keys: print them, compare two schedules with ``==``, or store them as JSON.
        """
        g = self.graph(window)
        out: dict[str, list[str]] = {}
        for key in nx.lexicographical_topological_sort(g, key=lambda k: (g.nodes[k]["step"] or 0, k)):
            d = g.nodes[key]
            if d["kind"] in ("input", "output", "eval"):
                continue
            lane = "syncs" if d["kind"] == "sync" else ("main" if d["chain"] is None else f"chain{d['chain']}")
            out.setdefault(lane, []).append(key)
        return out

    def schedule_table(self, workers: int = 2, window: int = 0, *, cost: CostModel | None = None, rows: int = 24) -> str:
        """The predicted per-worker action grid of window ``window``: one row per time slot, one column per worker."""
        _positive_int("workers", workers, "2")
        slots = list_schedule(self.task_graph(window, workers=workers), workers, cost or CostModel())
        times = sorted({s.start for s in slots})
        width = max([len(s.task) for s in slots] + [10])
        lines = [f"{'t (ms)':>9} | " + " | ".join(f"{f'worker {i}':<{width}}" for i in range(workers))]
        lines.append("-" * len(lines[0]))
        for t in times[:rows]:
            cells = [next((s.task for s in slots if s.worker == i and s.start <= t < s.stop), "") for i in range(workers)]
            lines.append(f"{1e3 * t:>9.2f} | " + " | ".join(f"{c:<{width}}" for c in cells))
        if len(times) > rows:
            lines.append(f"... {len(times) - rows} more slots; predicted window time {1e3 * makespan(slots):.2f} ms")
        return "\n".join(lines)

    def draw(self, path: str | os.PathLike[str], window: int = 0) -> Path:
        """Write a picture (.svg or .png) of one sync interval (or the first steps) of window ``window``, a colour per chain."""
        g = self.graph(window)
        part = "one sync interval" if any(d["kind"] == "sync" for _, d in g.nodes(data=True)) else "the first 3 steps"
        return draw(g, path, title=f"{self.schedule}: {part} of window {window}")

    def sync_steps(self) -> list[int]:
        """Every step of the run at which a sync merges the chains (where each interval ends), in order."""
        return [s for w in self.windows for s in self.schedule.sync_steps(w, self.model)]

    def chain_costs(self, window: int = 0) -> dict[int, float]:
        """Estimated work (flops) of each layer chain in window ``window``; empty for a schedule without chains."""
        costs: dict[int, float] = {}
        for _, d in self.graph(window).nodes(data=True):
            if d.get("chain") is not None:
                costs[d["chain"]] = costs.get(d["chain"], 0.0) + d.get("cost", 0.0)
        return costs

    def explain(self, a: str, b: str, window: int = 0) -> str:
        """Why op ``b`` waits for op ``a`` in window ``window``: the path, each edge data or control and from which pass."""
        return explain(self.graph(window), a, b)

    def validate(self) -> None:
        """Build and check the graph of every window shape; raise one GraphError listing every broken rule."""
        seen = set()
        for w in self.windows:
            key = self.schedule.shape_key(w, self.model)
            if key not in seen:
                seen.add(key)
                validate(self._build(w), where=f"window {w.index} ({self.schedule.name})")

    def task_graph(self, window: int = 0, *, workers: int = 1) -> nx.DiGraph:
        """The fused tasks of window ``window`` and their dependencies, as Dask will see them on ``workers`` workers."""
        w = self._window(window)
        return fuse(self.graph(window, workers=workers), w.step0, self.segment_steps)

    def program(self, window: Window, *, workers: int = 1) -> WindowProgram:
        """The fused program for ``window``'s shape on a local scheduler with ``workers`` workers, built once per shape."""
        key = (self.schedule.shape_key(window, self.model), workers)
        if key not in self._programs:
            canonical = self.schedule.canonical_window(window, self.model)
            g = self._build(canonical, workers)
            self._programs[key] = compile_program(g, fuse(g, canonical.step0, self.segment_steps), step0=canonical.step0)
        return self._programs[key]

    def stats(self) -> GraphStats:
        """Analysis of the whole run: each window shape analysed once, windows run one after another."""
        first: dict[Hashable, Window] = {}
        count: Counter[Hashable] = Counter()
        for w in self.windows:
            key = self.schedule.shape_key(w, self.model)
            first.setdefault(key, w)
            count[key] += 1
        total = GraphStats()
        for key, w in first.items():
            total = total + analyze(self._build(w)).scaled(count[key])
        return total

    def summary(self) -> str:
        """A readable report: ops by kind, edges by kind, critical path, width, tasks."""
        s = self.stats()
        windows = self.windows
        tasks = self.task_graph(0)
        lines = [
            f"Plan: {self.schedule.name} | {self.model.sizes} {self.model.activation}/{self.model.loss} | "
            f"batch {self.config.batch_size}, {self.total_steps} steps in {len(windows)} windows "
            f"({self.epochs} epoch(s), {steps_per_epoch(self.dataset.size('train'), self.config.batch_size)} steps each)",
            "ops:   " + ", ".join(f"{k} {v}" for k, v in sorted(s.ops.items())) + f"  (total {sum(s.ops.values())})",
            "edges: " + ", ".join(f"{k} {v}" for k, v in sorted(s.edges.items())) + f"  (total {sum(s.edges.values())})",
            f"work {s.work / 1e9:.3g} GFLOP; critical path {s.span / 1e9:.3g} GFLOP over {s.span_ops} ops; "
            f"parallelism {s.parallelism:.2f}; width {s.width}",
            f"fused: {min(self.segment_steps, windows[0].n_steps)} steps per task; "
            f"window 0 has {tasks.number_of_nodes()} tasks "
            f"for {self.graph(0).number_of_nodes()} ops",
        ]
        return "\n".join(lines)

    def run(self, scheduler: Any = None, *, progress: Callable[[int, int, dict[str, Any]], None] | None = None,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 1,
            resume: str | os.PathLike[str] | None = None, blas_threads: int = 1,
            on_divergence: str = "raise", init: TrainResult | Sequence[Params] | None = None) -> TrainResult:
        """Train. ``scheduler``: None/'threads' (default), 'sync', 'processes', a distributed.Client or a get function.

        ``progress(steps_done, total_steps, info)`` is called after every window.
        ``checkpoint=PATH`` writes the state to a zarr store atomically at the first window
        end (always a sync) after every ``checkpoint_every`` syncs, and at the end (under
        Sync, each window end counts as one sync);
        ``resume=PATH`` continues from such a checkpoint, giving bitwise the weights of the
        uninterrupted run.
        ``blas_threads``: BLAS threads per local worker (1: the same bits on every
        scheduler; 2 speeds up Sync on an idle 2-core machine and equals
        ``train_reference(..., blas_threads=2)``).
        ``on_divergence``: NaN or inf in the weights (checked at every sync node) or in the
        loss (checked at every window end) raises :class:`dagtrain.DivergenceError`, naming
        the step, the chain and the last good checkpoint, which is left intact (``"raise"``,
        the default). ``"rollback"`` instead restarts the window from the snapshot it began
        with at half the lr, up to 10 times; ``result.info["rollbacks"]`` lists them and
        checkpoints carry the lower lr, so a resumed run keeps it.
        ``init``: start from these weights instead of the model's initial ones (a warm
        start, as scikit-learn's ``partial_fit`` does): a list of ``Params`` per layer, or
        a previous :class:`TrainResult`, whose momentum is carried over too. Not with ``resume``.
        """
        from dagtrain.execute.run import ON_DIVERGENCE, execute, initial_state

        _positive_int("checkpoint_every", checkpoint_every, "5")
        if on_divergence not in ON_DIVERGENCE:
            raise ConfigError(f"on_divergence = {on_divergence!r} is not a policy; choose 'raise' or 'rollback'")
        if init is not None and resume is not None:
            raise ConfigError("pass init (a warm start) or resume (a checkpoint of this plan), not both")
        start = None if init is None else initial_state(self.model, init)
        return execute(self, scheduler, progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                       resume=resume, blas_threads=blas_threads, on_divergence=on_divergence, init=start)

    def _build(self, window: Window, workers: int = 1) -> nx.DiGraph:
        g = self.schedule.build(self.model, window, self.config.batch_size, eval_part_sizes(self.dataset, self.config.eval_split))
        if workers > 1 and g.graph.get("chains_independent"):
            g = validate(pack_lanes(g, workers), where=f"graph after pass pack_lanes ({workers} workers)")
            g = validate(sync_per_lane(g), where=f"graph after pass sync_per_lane ({workers} workers)")
        return g

    def _window(self, index: int) -> Window:
        windows = self.windows
        if not 0 <= index < len(windows):
            raise ConfigError(f"window {index} does not exist; the plan has windows 0..{len(windows) - 1}")
        return windows[index]


def compile(  # noqa: A001 - the verb users expect, as in dask's and TensorFlow's compile steps
    model: MLP,
    data: Dataset,
    schedule: Schedule | None = None,
    *,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 0.05,
    momentum: float = 0.0,
    max_steps: int | None = None,
    seed: int | None = None,
    segment_steps: int | None = None,
    window_steps: int | None = None,
    eval_every: int | None = None,
) -> Plan:
    """Compile training of ``model`` on ``data`` under ``schedule`` (default :class:`Sync`) into a Plan.

    ``seed`` fixes the batch order (default: the model's seed). ``max_steps`` stops early.
    ``segment_steps`` (steps fused into one Dask task) and ``window_steps`` (steps per
    submitted graph) default to values sized from the model's flops. The test split is
    evaluated at every epoch's end and, with ``eval_every``, also every ``eval_every`` steps
    into an epoch (a multiple of the schedule's sync interval, so evaluations fall on syncs).
    """
    if not isinstance(model, MLP):
        raise ConfigError(f"model must be a dagtrain.MLP, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise ConfigError(f"data must be a dagtrain Dataset (from dt.to_zarr or dt.datasets.mnist), got {type(data).__name__}")
    schedule = Sync() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise ConfigError(f"schedule must be a dagtrain schedule object, got {schedule!r}; use dt.Sync(), "
                          "dt.LayerLocal(k=10), dt.LocalSGD(k=50, replicas=2), dt.DelayedGradient(stages=2), "
                          "dt.Hybrid(...) or dt.Adaptive(...)")
    _positive_int("batch_size", batch_size, "128")
    _positive_int("epochs", epochs, "3")
    if max_steps is not None:
        _positive_int("max_steps", max_steps, "100")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr = {lr!r} must be a positive finite number, e.g. lr=0.05")
    if not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ConfigError(f"momentum = {momentum!r} must be in [0, 1), e.g. momentum=0.9")
    if getattr(schedule, "compensate", False) and momentum == 0:
        raise ConfigError(f"{schedule} predicts the other layers from their momentum, and momentum = 0 gives it none; "
                          "set momentum (e.g. momentum=0.9) or compensate=False")
    if model.n_features != data.n_features:
        raise ConfigError(f"the model takes {model.n_features} inputs but the data at {data.path} has "
                          f"{data.n_features} features; make the first size {data.n_features}")
    if model.n_classes != data.n_classes:
        raise ConfigError(f"the model has {model.n_classes} outputs but the data at {data.path} has "
                          f"{data.n_classes} classes; make the last size {data.n_classes}")
    if segment_steps is not None:
        _positive_int("segment_steps", segment_steps, "16")
    if window_steps is not None:
        _positive_int("window_steps", window_steps, "256")
    if eval_every is not None:
        _positive_int("eval_every", eval_every, "100")
        unit = schedule.align_window_steps(1)
        if eval_every % unit:
            raise ConfigError(f"eval_every = {eval_every} must be a multiple of {unit} steps under {schedule}, so that "
                              f"every evaluation falls on a sync point; e.g. eval_every={unit * max(1, eval_every // unit)}")
    schedule.check(model, total_steps(data.size("train"), batch_size, epochs, max_steps))
    default_segment = max(1, math.ceil(DEFAULT_TASK_FLOPS / step_flops(model, batch_size)))
    segment_steps = schedule.segment_steps(segment_steps, default_segment)
    if window_steps is None:
        window_steps = min(MAX_WINDOW_STEPS, SEGMENTS_PER_WINDOW * default_segment)
    window_steps = schedule.align_window_steps(window_steps)
    segment_steps = min(segment_steps, window_steps)
    config = RunConfig(model=model, dataset=data, batch_size=batch_size, lr=float(lr), momentum=float(momentum),
                       seed=model.seed if seed is None else int(seed))
    return Plan(model, data, schedule, config, epochs, max_steps, segment_steps, window_steps, eval_every)
