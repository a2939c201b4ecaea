"""The MLP: a stack of dense layers described by plain data, plus its initial weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dagtrain.errors import ConfigError
from dagtrain.model.functional import Array, Params, check_activation, check_loss, dense_forward


@dataclass(frozen=True)
class MLP:
    """A multilayer perceptron: ``sizes[0]`` inputs, ``sizes[-1]`` outputs.

    Hidden layers use ``activation``; the last layer is linear and ``loss`` turns its
    logits into probabilities (softmax for ``"softmax_xent"``, logistic units for the
    seed's ``"sigmoid_bce"``). Layers are numbered from 1 (``L1`` is next to the input),
    matching the task keys such as ``fwd:L1:s0``.

    Example: ``MLP([784, 256, 256, 10], activation="relu", loss="softmax_xent", seed=0)``.
    """

    sizes: tuple[int, ...]
    activation: str = "relu"
    loss: str = "softmax_xent"
    seed: int = 0
    dtype: str = "float32"

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        loss: str = "softmax_xent",
        seed: int = 0,
        dtype: str = "float32",
    ) -> None:
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ConfigError(f"MLP sizes {list(sizes)} need at least an input and an output size, e.g. [784, 10]")
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
                raise ConfigError(f"MLP sizes[{i}] = {n!r} must be a positive integer")
        if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("float64")):
            raise ConfigError(f"dtype {dtype!r} is not supported; use 'float32' (default) or 'float64'")
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        object.__setattr__(self, "activation", check_activation(activation))
        object.__setattr__(self, "loss", check_loss(loss))
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "dtype", np.dtype(dtype).name)

    @property
    def n_layers(self) -> int:
        """How many dense layers (weight matrices) the model has."""
        return len(self.sizes) - 1

    @property
    def n_features(self) -> int:
        """The input size."""
        return self.sizes[0]

    @property
    def n_classes(self) -> int:
        """The output size: one unit per class."""
        return self.sizes[-1]

    def layer_activation(self, layer: int) -> str:
        """Activation of layer ``layer`` (1-based): hidden layers use ``activation``, the last is linear."""
        return "identity" if layer == self.n_layers else self.activation

    def layer_flops(self, layer: int, batch: int) -> float:
        """Multiply-adds x 2 of one forward pass of ``layer`` over ``batch`` samples."""
        return 2.0 * batch * self.sizes[layer - 1] * self.sizes[layer]

    def init_params(self, seed: int | None = None) -> list[Params]:
        """Initial weights: He-normal for relu, Glorot-normal otherwise; zero biases.

        Deterministic given ``seed`` (default: the model's seed).
        """
        rng = np.random.default_rng(self.seed if seed is None else seed)
        params = []
        for layer in range(1, self.n_layers + 1):
            n_in, n_out = self.sizes[layer - 1], self.sizes[layer]
            gain = 2.0 / n_in if self.layer_activation(layer) == "relu" else 2.0 / (n_in + n_out)
            W = (rng.standard_normal((n_in, n_out)) * np.sqrt(gain)).astype(self.dtype)
            params.append(Params(W, np.zeros(n_out, dtype=self.dtype)))
        return params

    def logits(self, params: Sequence[Params], x: Array) -> Array:
        """Forward pass through every layer; returns the last layer's (linear) output."""
        a = np.asarray(x, dtype=self.dtype)
        for layer, p in enumerate(params, start=1):
            a, _ = dense_forward(p, a, self.layer_activation(layer))
        return a

    def predict(self, params: Sequence[Params], x: Array) -> Array:
        """The most likely class of each row of ``x``."""
        return np.asarray(self.logits(params, x).argmax(axis=1))
