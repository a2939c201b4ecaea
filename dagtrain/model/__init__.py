"""Model math: dense layers, activations, losses, the optimizer and the MLP description."""

from dagtrain.model.functional import (
    ACTIVATIONS,
    LOSSES,
    Params,
    dense_backward,
    dense_forward,
    dense_input_grad,
    loss_and_grad,
    sgd_update,
    sigmoid_bce,
    softmax_xent,
)
from dagtrain.model.mlp import MLP

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "MLP",
    "Params",
    "dense_backward",
    "dense_forward",
    "dense_input_grad",
    "loss_and_grad",
    "sgd_update",
    "sigmoid_bce",
    "softmax_xent",
]
