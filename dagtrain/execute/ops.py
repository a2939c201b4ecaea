"""What each kind of fine op does when it runs: a table from kind to a small function.

Every op function takes the run's :class:`OpContext`, the node's attributes and its
inputs by port, and returns its outputs by field. They call the pure model math; the
graph decides what feeds what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dagtrain.data.batches import BATCHES
from dagtrain.data.store import Dataset
from dagtrain.execute.divergence import check_merge
from dagtrain.model.functional import (
    Params,
    average_params,
    dense_backward,
    dense_forward,
    dense_input_grad,
    loss_and_grad,
    predict_params,
    sgd_update,
)
from dagtrain.model.mlp import MLP


@dataclass(frozen=True)
class RunConfig:
    """Everything static about a run that an op needs: sent once with each task."""

    model: MLP
    dataset: Dataset
    batch_size: int
    lr: float
    momentum: float
    seed: int
    eval_split: str | None = "test"


@dataclass
class OpContext:
    """One task's view of the run: the static config and where its window sits."""

    config: RunConfig
    epoch: int
    batch0: int
    step0: int


Inputs = dict[str, Any]
Outputs = dict[str, Any]
OpFunction = Callable[[OpContext, dict[str, Any], Inputs], Outputs]


def read_batch(ctx: OpContext, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples of batch ``batch`` of the context's epoch, in epoch order (read-only)."""
    cfg = ctx.config
    return BATCHES.batch(cfg.dataset, "train", cfg.seed, ctx.epoch, batch, cfg.batch_size)


def op_load(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Read this step's batch: the chunk(s) it needs, rows in epoch order."""
    x, y = read_batch(ctx, ctx.batch0 + node["rel_step"])
    return {"x": x, "y": y}


def weights_read(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Params:
    """The layer's weights as the op reads them: as given, or predicted ``predict_steps`` updates ahead from the momentum."""
    steps = node.get("predict_steps")
    if not steps or inputs.get("velocity") is None:
        params: Params = inputs["params"]
        return params
    return predict_params(inputs["params"], inputs["velocity"], steps * ctx.config.lr)


def op_forward(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """One dense layer forward."""
    out, cache = dense_forward(weights_read(ctx, node, inputs), inputs["x"], ctx.config.model.layer_activation(node["layer"]))
    return {"out": out, "cache": cache}


def op_loss(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """The loss of the batch and its gradient wrt the logits."""
    loss, grad = loss_and_grad(inputs["logits"], inputs["y"], ctx.config.model.loss)
    return {"loss": loss, "grad": grad}


def op_backward(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """One dense layer backward: weight gradients (unless no update reads them) and input gradient (unless unused)."""
    params, activation = weights_read(ctx, node, inputs), ctx.config.model.layer_activation(node["layer"])
    if not node.get("weight_grad", True):
        return {"grads": None, "grad_in": dense_input_grad(params, inputs["cache"], inputs["grad"], activation)}
    grads, grad_in = dense_backward(params, inputs["cache"], inputs["grad"], activation,
                                    need_input_grad=node.get("input_grad", True))
    return {"grads": grads, "grad_in": grad_in}


def op_update(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """One optimizer step of one layer, at the run's learning rate times the node's ``lr_scale`` (default 1)."""
    params, velocity = sgd_update(inputs["params"], inputs["velocity"], inputs["grads"],
                                  ctx.config.lr * node.get("lr_scale", 1.0), ctx.config.momentum)
    return {"params": params, "velocity": velocity}


def evaluation_sums(model: MLP, params: list[Params], dataset: Dataset, split: str,
                    chunks: range | None = None) -> tuple[float, int, int]:
    """``(summed loss, correct, count)`` of ``params`` over ``chunks`` of ``split`` (default: all)."""
    total_loss, correct, count = 0.0, 0, 0
    for c in range(dataset.n_chunks(split)) if chunks is None else chunks:
        x, y = BATCHES.chunk(dataset, split, c)  # resident after the first evaluation, if the split fits
        logits = model.logits(params, x)
        loss, _ = loss_and_grad(logits, y, model.loss)
        total_loss += loss * len(y)
        correct += int(np.sum(logits.argmax(axis=1) == y))
        count += len(y)
    return total_loss, correct, count


def combine_sums(sums: list[tuple[float, int, int]]) -> dict[str, float]:
    """Mean loss and accuracy from per-part sums."""
    count = sum(s[2] for s in sums)
    return {"loss": sum(s[0] for s in sums) / count, "accuracy": sum(s[1] for s in sums) / count}


def evaluate(model: MLP, params: list[Params], dataset: Dataset, split: str) -> dict[str, float]:
    """Loss and accuracy of ``params`` on ``split``, chunk by chunk."""
    return combine_sums([evaluation_sums(model, params, dataset, split)])


def eval_parts(dataset: Dataset, split: str | None, max_parts: int = 8) -> int:
    """How many independent parts an evaluation of ``split`` is cut into: one per chunk, at most ``max_parts``."""
    if split is None or split not in dataset.split_sizes:
        return 1
    return max(1, min(max_parts, dataset.n_chunks(split)))


def part_chunks(n_chunks: int, part: int, parts: int) -> range:
    """The chunks evaluation part ``part`` of ``parts`` covers: contiguous, sizes differing by at most one."""
    return range(part * n_chunks // parts, (part + 1) * n_chunks // parts)


def eval_part_sizes(dataset: Dataset, split: str | None, max_parts: int = 8) -> tuple[int, ...]:
    """How many samples each evaluation part of ``split`` scores (zeros if the run does not evaluate)."""
    parts = eval_parts(dataset, split, max_parts)
    if split is None or split not in dataset.split_sizes:
        return (0,) * parts
    n, size, total = dataset.n_chunks(split), dataset.chunk_size, dataset.size(split)
    return tuple(min(r.stop * size, total) - r.start * size for r in (part_chunks(n, p, parts) for p in range(parts)))


def op_eval(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Test metrics: a part sums loss and hits over its range of test chunks; the whole combines the parts."""
    cfg = ctx.config
    if cfg.eval_split is None or cfg.eval_split not in cfg.dataset.split_sizes:
        return {"sums": None, "metrics": {}}
    if node.get("part") is None:
        return {"metrics": combine_sums([inputs[port] for port in sorted(inputs, key=lambda p: int(p.split("/")[1]))])}
    params = [inputs[f"params/L{layer}"] for layer in range(1, cfg.model.n_layers + 1)]
    n = cfg.dataset.n_chunks(cfg.eval_split)
    chunks = part_chunks(n, node["part"], node["parts"])
    return {"sums": evaluation_sums(cfg.model, params, cfg.dataset, cfg.eval_split, chunks)}


def op_sync(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Merge the chains' latest weights into the snapshot the next interval reads.

    A port per layer (``params/L2``) is passed on as it is (no copy: arrays are immutable).
    Ports per replica (``params/L2/r1``, ``velocity/L2/r1``, ...) are averaged over the replicas.
    Non-finite weights stop the run here, naming the chain that sent them (``node["sources"]``).
    """
    check_merge(ctx.step0, ctx.step0 + node["rel_step"], node.get("sources", ()), inputs)
    groups: dict[str, list[Any]] = {}
    for port in sorted(inputs, key=_replica_order):
        groups.setdefault(port.rsplit("/r", 1)[0] if port.count("/") == 2 else port, []).append(inputs[port])
    return {name.replace("params/", "snapshot/"): values[0] if len(values) == 1 else average_params(values)
            for name, values in groups.items()}


def _replica_order(port: str) -> tuple[str, int]:
    base, _, replica = port.rpartition("/r") if port.count("/") == 2 else (port, "", "0")
    return base, int(replica)


def op_output(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Collect the window's results under their port names."""
    return dict(inputs)


OPS: dict[str, OpFunction] = {
    "load": op_load,
    "forward": op_forward,
    "loss": op_loss,
    "backward": op_backward,
    "update": op_update,
    "sync": op_sync,
    "eval": op_eval,
    "output": op_output,
}
