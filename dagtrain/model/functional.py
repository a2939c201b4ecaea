"""The math of one dense layer, its activations and the losses, as pure functions.

Forward and backward sit side by side. Nothing here mutates an input, so any of these
functions can be a task in a graph. Shapes: ``x`` is (batch, n_in), ``W`` is
(n_in, n_out), ``b`` is (n_out,). Everything stays in the dtype of its inputs
(float32 by default): scalars are cast before they touch an array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from dagtrain.errors import ConfigError
from dagtrain.model import kernels

Array = np.ndarray

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
LOSSES = ("softmax_xent", "sigmoid_bce")


class Params(NamedTuple):
    """The parameters of one dense layer."""

    W: Array
    b: Array


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise a ConfigError naming the choices."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return name


def check_loss(name: str) -> str:
    """Return ``name`` if it is a known loss, else raise a ConfigError naming the choices."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return name


def _sigmoid(z: Array) -> Array:
    # Stable for large |z|: exp only ever sees non-positive arguments.
    e = np.exp(-np.abs(z))
    out: Array = np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)
    return out


# --- activations: value, and derivative expressed through the activation's output a ---
def activate(z: Array, name: str) -> Array:
    """Apply the activation ``name`` elementwise."""
    if name == "relu":
        out: Array = np.maximum(z, 0)
        return out
    if name == "tanh":
        out = np.tanh(z)
        return out
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "identity":
        return z
    raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def activation_backward(a: Array, grad_a: Array, name: str) -> Array:
    """Gradient wrt the pre-activation z, given the output ``a = act(z)`` and dL/da."""
    if name == "relu":
        if kernels.fits(a, grad_a):  # the same bits in one pass (kernels.py)
            return kernels.relu_backward(a, grad_a)
        out: Array = grad_a * (a > 0)
        return out
    if name == "tanh":
        out = grad_a * (1 - a * a)
        return out
    if name == "sigmoid":
        out = grad_a * (a * (1 - a))
        return out
    if name == "identity":
        return grad_a
    raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


# --- the dense layer ---
def dense_forward(params: Params, x: Array, activation: str) -> tuple[Array, tuple[Array, Array]]:
    """``a = act(x @ W + b)``. Returns ``a`` and the cache the backward pass needs."""
    z = x @ params.W
    if activation == "relu" and kernels.fits(z, params.b):  # the same bits in one pass (kernels.py)
        a = kernels.bias_relu(z, params.b)
        return a, (x, a)
    z += params.b  # in place on the fresh product: one temporary fewer, the same bits
    a = np.maximum(z, 0, out=z) if activation == "relu" else activate(z, activation)
    return a, (x, a)


def dense_backward(
    params: Params, cache: tuple[Array, Array], grad_a: Array, activation: str, *, need_input_grad: bool = True
) -> tuple[Params, Array | None]:
    """Gradients of the loss wrt (W, b) and, if asked, wrt the layer's input x."""
    x, a = cache
    grad_z = activation_backward(a, grad_a, activation)
    grads = Params(x.T @ grad_z, grad_z.sum(axis=0))
    grad_x = grad_z @ params.W.T if need_input_grad else None
    return grads, grad_x


def dense_input_grad(params: Params, cache: tuple[Array, Array], grad_a: Array, activation: str) -> Array:
    """The gradient wrt the layer's input x alone: all a layer whose weights stay fixed passes down."""
    _, a = cache
    out: Array = activation_backward(a, grad_a, activation) @ params.W.T
    return out


# --- losses: mean over the batch; return the loss and dL/dlogits together ---
def softmax_xent(logits: Array, labels: Array) -> tuple[float, Array]:
    """Softmax cross-entropy of integer ``labels``: ``mean_n -ln softmax(logits_n)[label_n]``."""
    if kernels.fits(logits) and kernels.are_labels(labels, logits):  # the same bits in four calls, not a dozen (kernels.py)
        return kernels.softmax_xent(logits, labels)
    n = logits.shape[0]
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    picked = shifted[rows, labels]
    grad = np.exp(shifted, out=shifted)  # one buffer from here on: each step below is in place
    sum_exp = grad.sum(axis=1, keepdims=True)
    per_sample = np.log(sum_exp[:, 0])
    per_sample -= picked
    loss = float(per_sample.sum() / n)  # what np.mean computes, without its Python wrapper
    grad /= sum_exp
    grad[rows, labels] -= 1
    grad /= logits.dtype.type(n)
    return loss, grad


def sigmoid_bce(logits: Array, labels: Array) -> tuple[float, Array]:
    """The seed's logistic outputs with ``E = -sum_k [t ln y + (1-t) ln(1-y)]``, y = sigmoid(logits).

    ``t`` is the one-hot encoding of ``labels``; E is summed over the output units and
    averaged over the batch (for single-sample updates that is exactly the seed's E).
    Computed from the logits, so it stays finite where y rounds to 0 or 1.
    """
    n = logits.shape[0]
    t = np.zeros_like(logits)
    t[np.arange(n), labels] = 1
    # -[t ln s(z) + (1-t) ln(1-s(z))] = max(z,0) - z t + ln(1 + exp(-|z|))
    per_unit = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
    loss = float(per_unit.sum() / n)
    return loss, (_sigmoid(logits) - t) / logits.dtype.type(n)


def loss_and_grad(logits: Array, labels: Array, name: str) -> tuple[float, Array]:
    """Dispatch to the loss called ``name``."""
    if name == "softmax_xent":
        return softmax_xent(logits, labels)
    if name == "sigmoid_bce":
        return sigmoid_bce(logits, labels)
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


# --- the optimizer: SGD with optional (heavy-ball) momentum, PyTorch's convention ---
def sgd_update(
    params: Params, velocity: Params | None, grads: Params, lr: float, momentum: float
) -> tuple[Params, Params | None]:
    """``v = momentum * v + g; p = p - lr * v`` (plain SGD when momentum is 0, velocity None)."""
    dtype = params.W.dtype.type
    if momentum == 0 or velocity is None:
        step = grads
        new_velocity = None if momentum == 0 else grads
    else:
        mu = dtype(momentum)
        step = Params(_axpy(mu, velocity.W, grads.W), _axpy(mu, velocity.b, grads.b))
        new_velocity = step
    eta = dtype(lr)
    return Params(_axpy(-eta, step.W, params.W), _axpy(-eta, step.b, params.b)), new_velocity


def predict_params(params: Params, velocity: Params, distance: float) -> Params:
    """``p - distance * v``: where momentum SGD takes ``p`` in ``distance / lr`` more steps at constant velocity."""
    d = params.W.dtype.type(-distance)
    return Params(_axpy(d, velocity.W, params.W), _axpy(d, velocity.b, params.b))


def _axpy(alpha: np.floating[Any], x: Array, y: Array) -> Array:
    """``alpha * x + y`` in one new array (inputs untouched: a snapshot may still hold them)."""
    out: Array = np.multiply(x, alpha)
    out += y
    return out


# --- model averaging (LocalSGD's sync): one rule, shared by the graph and the reference loop ---
def average_params(replicas: Sequence[Params | None]) -> Params | None:
    """The elementwise mean of the replicas' ``(W, b)``, summed in replica order; one replica is returned as is.

    ``None`` (no optimizer state under plain SGD) averages to ``None``.
    """
    if len(replicas) == 1 or replicas[0] is None:
        return replicas[0]
    present = [r for r in replicas if r is not None]
    scale = present[0].W.dtype.type(1.0 / len(present))
    W, b = present[0].W.copy(), present[0].b.copy()
    for r in present[1:]:
        W += r.W
        b += r.b
    W *= scale
    b *= scale
    return Params(W, b)
