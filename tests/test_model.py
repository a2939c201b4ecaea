"""Model math: every backward checked against finite differences; nothing mutates its inputs."""

from __future__ import annotations

import numpy as np
import pytest

import dagtrain as dt
from dagtrain.model.functional import (
    Params,
    dense_backward,
    dense_forward,
    dense_input_grad,
    loss_and_grad,
    sgd_update,
)

RNG = np.random.default_rng(0)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of scalar f wrt every entry of x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
def test_dense_backward_matches_finite_differences(activation: str) -> None:
    x = RNG.normal(size=(5, 4))
    p = Params(RNG.normal(size=(4, 3)), RNG.normal(size=3))
    up = RNG.normal(size=(5, 3))  # L = sum(up * a): dL/da = up

    def loss() -> float:
        return float(np.sum(up * dense_forward(p, x, activation)[0]))

    _, cache = dense_forward(p, x, activation)
    grads, grad_x = dense_backward(p, cache, up, activation)
    np.testing.assert_allclose(grads.W, numeric_grad(loss, p.W), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.b, numeric_grad(loss, p.b), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_x, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["softmax_xent", "sigmoid_bce"])
def test_loss_gradient_matches_finite_differences(name: str) -> None:
    logits = RNG.normal(size=(6, 4)) * 3
    labels = np.array([0, 3, 1, 2, 2, 0])
    _, grad = loss_and_grad(logits, labels, name)
    np.testing.assert_allclose(grad, numeric_grad(lambda: loss_and_grad(logits, labels, name)[0], logits),
                               rtol=1e-5, atol=1e-8)


def test_sigmoid_bce_is_the_seeds_cross_entropy() -> None:
    logits = RNG.normal(size=(3, 5))
    labels = np.array([4, 0, 2])
    t = np.eye(5)[labels]
    y = 1 / (1 + np.exp(-logits))
    seed_e = -np.sum(t * np.log(y) + (1 - t) * np.log(1 - y)) / 3
    assert loss_and_grad(logits, labels, "sigmoid_bce")[0] == pytest.approx(seed_e, rel=1e-12)


def test_losses_stay_finite_for_huge_logits() -> None:
    logits = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    for name in ("softmax_xent", "sigmoid_bce"):
        loss, grad = loss_and_grad(logits, np.array([1]), name)
        assert np.isfinite(loss) and np.isfinite(grad).all()


def test_whole_mlp_gradient_matches_finite_differences() -> None:
    model = dt.MLP([4, 5, 3], activation="tanh", loss="softmax_xent", seed=3, dtype="float64")
    params = model.init_params()
    x, y = RNG.normal(size=(7, 4)), np.array([0, 1, 2, 1, 0, 2, 2])

    def loss() -> float:
        return loss_and_grad(model.logits(params, x), y, model.loss)[0]

    a1, c1 = dense_forward(params[0], x, "tanh")
    a2, c2 = dense_forward(params[1], a1, "identity")
    _, g = loss_and_grad(a2, y, model.loss)
    g2, gx = dense_backward(params[1], c2, g, "identity")
    g1, _ = dense_backward(params[0], c1, gx, "tanh", need_input_grad=False)
    assert gx is not None
    np.testing.assert_array_equal(dense_input_grad(params[1], c2, g, "identity"), gx)  # the same bits, W's gradient skipped
    np.testing.assert_allclose(g1.W, numeric_grad(loss, params[0].W), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g2.W, numeric_grad(loss, params[1].W), rtol=1e-5, atol=1e-8)


def test_functions_do_not_mutate_inputs() -> None:
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    p = Params(RNG.normal(size=(3, 2)).astype(np.float32), np.zeros(2, np.float32))
    snapshot = [a.copy() for a in (x, p.W, p.b)]
    a, cache = dense_forward(p, x, "relu")
    grads, _ = dense_backward(p, cache, np.ones_like(a), "relu")
    loss_and_grad(a, np.array([0, 1, 1, 0]), "softmax_xent")
    v = Params(np.ones_like(p.W), np.ones_like(p.b))
    sgd_update(p, v, grads, 0.1, 0.9)
    for before, after in zip(snapshot, (x, p.W, p.b), strict=True):
        assert np.array_equal(before, after)
    assert np.array_equal(v.W, np.ones_like(p.W))


def test_momentum_update_follows_the_heavy_ball_rule() -> None:
    p = Params(np.array([[1.0]], np.float32), np.array([0.0], np.float32))
    g = Params(np.array([[2.0]], np.float32), np.array([1.0], np.float32))
    p1, v1 = sgd_update(p, None, g, 0.1, 0.9)  # first step: v = g
    p2, v2 = sgd_update(p1, v1, g, 0.1, 0.9)  # v = 0.9 * 2 + 2 = 3.8
    assert v2 is not None and v2.W[0, 0] == pytest.approx(3.8)
    assert p2.W[0, 0] == pytest.approx(1.0 - 0.2 - 0.38)
    assert p2.W.dtype == np.float32
    plain, none = sgd_update(p, None, g, 0.1, 0.0)
    assert none is None and plain.W[0, 0] == pytest.approx(0.8)


def test_mlp_rejects_bad_configuration() -> None:
    with pytest.raises(dt.ConfigError, match="activation 'gelu'"):
        dt.MLP([4, 2], activation="gelu")
    with pytest.raises(dt.ConfigError, match="loss 'mse'"):
        dt.MLP([4, 2], loss="mse")
    with pytest.raises(dt.ConfigError, match=r"sizes\[1\] = 0"):
        dt.MLP([4, 0, 2])
    with pytest.raises(dt.ConfigError, match="at least an input and an output"):
        dt.MLP([4])


def test_init_is_deterministic_and_float32() -> None:
    a, b = dt.MLP([6, 4, 2], seed=5).init_params(), dt.MLP([6, 4, 2], seed=5).init_params()
    assert all(np.array_equal(p.W, q.W) for p, q in zip(a, b, strict=True))
    assert a[0].W.dtype == np.float32 and a[0].W.shape == (6, 4)
    assert not np.array_equal(a[0].W, dt.MLP([6, 4, 2], seed=6).init_params()[0].W)
