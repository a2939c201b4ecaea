"""What each kind of fine op does when it runs: a table from kind to a small function.

Every op function takes the run's :class:`OpContext`, the node's attributes and its
inputs by port, and returns its outputs by field. They call the pure model math; the
graph decides what feeds what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dagtrain.data.order import epoch_order
from dagtrain.data.store import Dataset
from dagtrain.model.functional import Params, dense_backward, dense_forward, loss_and_grad, sgd_update
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
    """One task's view of the run: the static config, where its window sits, a chunk cache."""

    config: RunConfig
    epoch: int
    batch0: int
    step0: int
    chunks: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def chunk(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read chunk ``index`` of ``split`` once per task."""
        hit = self.chunks.get((split, index))
        if hit is None:
            hit = self.chunks[(split, index)] = self.config.dataset.read_chunk(split, index)
        return hit


Inputs = dict[str, Any]
Outputs = dict[str, Any]
OpFunction = Callable[[OpContext, dict[str, Any], Inputs], Outputs]


def read_batch(ctx: OpContext, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples of batch ``batch`` of the context's epoch, read from their chunks."""
    cfg = ctx.config
    ds = cfg.dataset
    n, c = ds.size("train"), ds.chunk_size
    idx = epoch_order(n, c, cfg.seed, ctx.epoch)[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
    chunk_ids = np.unique(idx // c)
    if len(chunk_ids) == 1:
        x, y = ctx.chunk("train", int(chunk_ids[0]))
        rows = idx - chunk_ids[0] * c
        return x[rows], y[rows]
    parts = [ctx.chunk("train", int(i)) for i in chunk_ids]
    xs = np.concatenate([p[0] for p in parts])
    ys = np.concatenate([p[1] for p in parts])
    # Row of sample i in the concatenation: offset of its chunk plus its place in the chunk.
    offsets = np.cumsum([0] + [len(p[1]) for p in parts[:-1]])
    rows = offsets[np.searchsorted(chunk_ids, idx // c)] + idx % c
    return xs[rows], ys[rows]


def op_load(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Read this step's batch: the chunk(s) it needs, rows in epoch order."""
    x, y = read_batch(ctx, ctx.batch0 + node["rel_step"])
    return {"x": x, "y": y}


def op_forward(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """One dense layer forward."""
    out, cache = dense_forward(inputs["params"], inputs["x"], ctx.config.model.layer_activation(node["layer"]))
    return {"out": out, "cache": cache}


def op_loss(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """The loss of the batch and its gradient wrt the logits."""
    loss, grad = loss_and_grad(inputs["logits"], inputs["y"], ctx.config.model.loss)
    return {"loss": loss, "grad": grad}


def op_backward(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """One dense layer backward: weight gradients and (unless it is the lowest) the input gradient."""
    grads, grad_in = dense_backward(inputs["params"], inputs["cache"], inputs["grad"],
                                    ctx.config.model.layer_activation(node["layer"]),
                                    need_input_grad=node.get("input_grad", True))
    return {"grads": grads, "grad_in": grad_in}


def op_update(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """One optimizer step of one layer."""
    params, velocity = sgd_update(inputs["params"], inputs["velocity"], inputs["grads"],
                                  ctx.config.lr, ctx.config.momentum)
    return {"params": params, "velocity": velocity}


def evaluate(model: MLP, params: list[Params], dataset: Dataset, split: str) -> dict[str, float]:
    """Loss and accuracy of ``params`` on ``split``, chunk by chunk."""
    total_loss = correct = count = 0.0
    for c in range(dataset.n_chunks(split)):
        x, y = dataset.read_chunk(split, c)
        logits = model.logits(params, x)
        loss, _ = loss_and_grad(logits, y, model.loss)
        total_loss += loss * len(y)
        correct += float(np.sum(logits.argmax(axis=1) == y))
        count += len(y)
    return {"loss": total_loss / count, "accuracy": correct / count}


def op_eval(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Test loss and accuracy of the weights at the end of an epoch (or of the run)."""
    cfg = ctx.config
    params = [inputs[f"params/L{layer}"] for layer in range(1, cfg.model.n_layers + 1)]
    if cfg.eval_split is None or cfg.eval_split not in cfg.dataset.split_sizes:
        return {"metrics": {}}
    return {"metrics": evaluate(cfg.model, params, cfg.dataset, cfg.eval_split)}


def op_output(ctx: OpContext, node: dict[str, Any], inputs: Inputs) -> Outputs:
    """Collect the window's results under their port names."""
    return dict(inputs)


OPS: dict[str, OpFunction] = {
    "load": op_load,
    "forward": op_forward,
    "loss": op_loss,
    "backward": op_backward,
    "update": op_update,
    "eval": op_eval,
    "output": op_output,
}
