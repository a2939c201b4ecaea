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

from dagtrain.data.order import epoch_order
from dagtrain.data.store import CHUNK_CACHE, Dataset
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
    """One task's view of the run: the static config and where its window sits."""

    config: RunConfig
    epoch: int
    batch0: int
    step0: int

    def chunk(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``index`` of ``split``, through the process's chunk cache."""
        return CHUNK_CACHE.get(self.config.dataset, split, index)


Inputs = dict[str, Any]
Outputs = dict[str, Any]
OpFunction = Callable[[OpContext, dict[str, Any], Inputs], Outputs]


def read_batch(ctx: OpContext, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples of batch ``batch`` of the context's epoch, gathered from their chunks."""
    cfg = ctx.config
    ds = cfg.dataset
    n, c = ds.size("train"), ds.chunk_size
    idx = epoch_order(n, c, cfg.seed, ctx.epoch)[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
    chunk_of, row_of = np.divmod(idx, c)
    first = int(chunk_of[0])
    if (chunk_of == first).all():
        x, y = ctx.chunk("train", first)
        return x[row_of], y[row_of]
    x_out = np.empty((len(idx), ds.n_features), dtype=np.float32)
    y_out = np.empty(len(idx), dtype=np.int32)
    for chunk in np.unique(chunk_of):
        x, y = ctx.chunk("train", int(chunk))
        mask = chunk_of == chunk
        x_out[mask] = x[row_of[mask]]
        y_out[mask] = y[row_of[mask]]
    return x_out, y_out


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
