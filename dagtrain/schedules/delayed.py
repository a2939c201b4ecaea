"""``DelayedGradient(stages, microbatches)``: pipeline stages that update with gradients a fixed number of steps old.

The layers are cut into ``stages`` consecutive groups. With ``microbatches`` batches in
flight, as in PipeDream's one-forward-one-backward pipeline, stage ``s`` (1 = the input
side) runs the forward of step t on weights ``d_s = min(stages - s, microbatches - 1)``
versions old, and updates the current weights with the resulting gradient:

    W_s(t + 1) = W_s(t) - lr * g_s(batch t; W_s(t - d_s))

The top stage is never stale; the bottom one is the stalest. Two validated passes over
the exact graph:

1. ``assign_stages``: every op is labelled with its stage (loads with the first, the loss
   with the last), and the fused tasks split each stage's step into a forward task and a
   backward-and-update task. Only labels change: still exact.
2. ``delay_weight_reads``: the cut. ``fwd:Ll:st`` reads layer l's weights from the update
   of step ``t - d - 1`` instead of ``t - 1``. With ``stashing=True`` (PipeDream's weight
   stashing) the backward of step t reads the same version as its forward; with
   ``stashing=False`` it reads the latest. The forward of the next d steps then no longer
   waits for this step's backward, so the stages' tasks overlap.

``microbatches=1`` (or one stage) makes every delay 0: exactly Sync. The pipeline is
flushed at every window boundary: a window's first steps read no version older than the
window's input (as GPipe and PipeDream-flush do), so within a window a delay is at most d.
References: Harlap et al., "PipeDream: Fast and Efficient Pipeline Parallel DNN Training"
(2018); Huo et al., "Decoupled Parallel Backpropagation with Convergence Guarantee" (2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from dagtrain.errors import ConfigError
from dagtrain.graph.ir import op_key, producer_of, repoint
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP
from dagtrain.schedules.base import Pass, Schedule


@dataclass(frozen=True)
class DelayedGradient(Schedule):
    """Pipeline-parallel training with stale weights: stage s's gradients are ``d_s`` steps old."""

    stages: int = 2
    microbatches: int = 2
    stashing: bool = True
    name = "delayed"

    def __post_init__(self) -> None:
        for field_name, value in (("stages", self.stages), ("microbatches", self.microbatches)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"DelayedGradient {field_name} = {value!r} must be a positive integer, "
                                  "e.g. DelayedGradient(stages=2, microbatches=2)")
        if not isinstance(self.stashing, bool):
            raise ConfigError(f"DelayedGradient stashing = {self.stashing!r} must be True or False")

    def __str__(self) -> str:
        stash = "" if self.stashing else ", stashing=False"
        return f"DelayedGradient(stages={self.stages}, microbatches={self.microbatches}{stash})"

    def n_chains(self, model: MLP) -> int:
        """One chain per stage."""
        return self.stages

    def check(self, model: MLP, total_steps: int) -> None:
        """A stage needs at least one layer."""
        if self.stages > model.n_layers:
            raise ConfigError(f"DelayedGradient stages = {self.stages} is more than the model's {model.n_layers} "
                              f"layers; use stages <= {model.n_layers}")

    def segment_steps(self, requested: int | None, default: int) -> int:
        """One step per task: a stage's forward of step t and its backward of step t - d are different tasks."""
        if requested not in (None, 1):
            raise ConfigError(f"segment_steps = {requested} is not possible with DelayedGradient: a stage's tasks "
                              "hold one step each (the pipeline overlaps steps); leave it out")
        return 1

    def stage_of(self, layer: int, n_layers: int) -> int:
        """The stage (1-based, 1 = input side) that holds ``layer``: consecutive groups, the first ones larger."""
        base, extra = divmod(n_layers, self.stages)
        bound = 0
        for s in range(1, self.stages + 1):
            bound += base + (1 if s <= extra else 0)
            if layer <= bound:
                return s
        raise ValueError(f"layer {layer} is outside the model's {n_layers} layers")

    def delay(self, stage: int) -> int:
        """How many versions old the weights of ``stage``'s forward are: ``min(stages - stage, microbatches - 1)``."""
        return min(self.stages - stage, self.microbatches - 1)

    def rewrites(self) -> tuple[Pass, ...]:
        """Label the stages, then delay each stage's weight reads."""
        return (self.assign_stages, self.delay_weight_reads)

    # --- pass 1 ---
    def assign_stages(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Label each op with its stage, and whether it is in the stage's forward or backward task."""
        L = model.n_layers
        for _, d in g.nodes(data=True):
            kind = d["kind"]
            if kind in ("forward", "backward", "update"):
                d["chain"] = self.stage_of(d["layer"], L)
            elif kind == "load":
                d["chain"] = 1
            elif kind == "loss":
                d["chain"] = self.stages
            if kind in ("load", "forward"):
                d["phase"] = "f"
            elif kind in ("loss", "backward", "update"):
                d["phase"] = "b"
        g.graph["chain_role"] = "stage"
        return g

    # --- pass 2: the approximation ---
    def delay_weight_reads(self, g: nx.DiGraph, model: MLP) -> nx.DiGraph:
        """Stage s's forward (and, stashed, backward) of step t reads the version made at step ``t - d_s - 1``."""
        w: Window = g.graph["window"]
        for key, d in list(g.nodes(data=True)):
            if d["kind"] not in ("forward", "backward") or (d["kind"] == "backward" and not self.stashing):
                continue
            t, layer = d["step"], d["layer"]
            old = t - self.delay(d["chain"]) - 1
            if old == t - 1:
                continue
            src = (op_key("update", layer=layer, step=old), "params") if old >= w.step0 else \
                (op_key("input", step=w.step0), f"params/L{layer}")
            if producer_of(g, key, "params") != src:
                repoint(g, key, "params", *src, made_by="delay_weight_reads")
        return g
