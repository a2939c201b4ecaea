"""The plain numpy training loops: no graph, no Dask. The yardsticks for correctness and speed.

They use the same model functions and the same batch order as a compiled plan, so the
two must agree bit for bit: :func:`train_reference` for Sync, and
:func:`train_reference_layerlocal` for LayerLocal, written as the seed describes the
algorithm (copy the weights, let each layer train alone, merge every k steps).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dagtrain.data.order import epoch_order, steps_per_epoch
from dagtrain.data.store import Dataset
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
from dagtrain.schedules.delayed import DelayedGradient
from dagtrain.schedules.hybrid import Hybrid
from dagtrain.schedules.layerlocal import LayerLocal
from dagtrain.schedules.localsgd import LocalSGD


def forward_all(weights: Sequence[Params], activations: Sequence[str], x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """The forward pass through every layer: the logits and each layer's cache for the backward pass."""
    caches = []
    for w, activation in zip(weights, activations, strict=True):
        x, cache = dense_forward(w, x, activation)
        caches.append(cache)
    return x, caches


def train_reference(
    model: MLP,
    data: Dataset,
    *,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 0.05,
    momentum: float = 0.0,
    max_steps: int | None = None,
    seed: int | None = None,
    arrays: tuple[np.ndarray, np.ndarray] | None = None,
    blas_threads: int = 1,
    init: tuple[Sequence[Params], Sequence[Params | None]] | None = None,
) -> list[Params]:
    """Train with a plain loop over batches; return the weights. ``arrays`` skips reading the store.

    ``init``: (weights, velocity) to start from instead of the model's initial weights.

    BLAS runs on ``blas_threads`` threads (1, as in a plan's tasks: a different thread
    count changes the summation order and so the last bits of the result).
    """
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _loop(model, data, batch_size, epochs, lr, momentum, max_steps, seed, arrays, init)


def _loop(model: MLP, data: Dataset, batch_size: int, epochs: int, lr: float, momentum: float,
          max_steps: int | None, seed: int | None, arrays: tuple[np.ndarray, np.ndarray] | None,
          init: tuple[Sequence[Params], Sequence[Params | None]] | None = None) -> list[Params]:
    x_all, y_all = arrays if arrays is not None else data.read_split("train")
    seed = model.seed if seed is None else seed
    n = len(y_all)
    params = model.init_params() if init is None else list(init[0])
    velocity: list[Params | None] = [None] * model.n_layers if init is None else list(init[1])
    acts = [model.layer_activation(layer) for layer in range(1, model.n_layers + 1)]
    step = 0
    for epoch in range(epochs):
        order = epoch_order(n, data.chunk_size, seed, epoch)
        for b in range(steps_per_epoch(n, batch_size)):
            if max_steps is not None and step >= max_steps:
                return params
            idx = order[b * batch_size : (b + 1) * batch_size]
            sgd_step(model, params, velocity, acts, x_all[idx], y_all[idx], lr, momentum)
            step += 1
    return params


def sgd_step(model: MLP, params: list[Params], velocity: list[Params | None], activations: Sequence[str],
             x: np.ndarray, y: np.ndarray, lr: float, momentum: float) -> None:
    """One step of minibatch SGD on ``(x, y)``: forward, loss, backward and update, layer by layer (in place in the lists)."""
    logits, caches = forward_all(params, activations, x)
    _, grad = loss_and_grad(logits, y, model.loss)
    for i in range(model.n_layers - 1, -1, -1):
        grads, grad_in = dense_backward(params[i], caches[i], grad, activations[i], need_input_grad=i > 0)
        if grad_in is not None:
            grad = grad_in
        params[i], velocity[i] = sgd_update(params[i], velocity[i], grads, lr, momentum)


def chain_step(model: MLP, params: list[Params], layer: int, activations: Sequence[str], x: np.ndarray, y: np.ndarray,
               lr: float) -> None:
    """One step of LayerLocal's chain for ``layer`` (1-based): forward through every layer, back down to ``layer`` only.

    The layers above pass the gradient down without a weight gradient of their own
    (``dense_input_grad``), as the compiled chains compute it; only ``layer`` is updated
    (plain SGD, in place in ``params``).
    """
    logits, caches = forward_all(params, activations, x)
    _, grad = loss_and_grad(logits, y, model.loss)
    for i in range(model.n_layers - 1, layer - 1, -1):
        grad = dense_input_grad(params[i], caches[i], grad, activations[i])
    grads, _ = dense_backward(params[layer - 1], caches[layer - 1], grad, activations[layer - 1], need_input_grad=False)
    params[layer - 1], _ = sgd_update(params[layer - 1], None, grads, lr, 0.0)


def training_step(model: MLP, x: np.ndarray, y: np.ndarray, lr: float = 0.05, *,
                  chains: Sequence[int] | None = None) -> Callable[[], list[Params]]:
    """A callable that runs one SGD step of ``model`` on the batch ``(x, y)`` from the initial weights and returns the new ones.

    ``chains``: instead of a whole step, each call runs one LayerLocal chain step
    (:func:`chain_step`) for the next layer in ``chains``, round robin: the work a plan's
    chain tasks do, with its larger share of glue per flop. Nothing accumulates between
    calls, so it can be timed over and over, and in several threads at once: the work
    :func:`dagtrain.analysis.predict.measure_threaded` and
    :func:`~dagtrain.analysis.predict.measure_contention` time.
    """
    if chains is not None and (not chains or any(c not in range(1, model.n_layers + 1) for c in chains)):
        raise ValueError(f"chains = {list(chains)!r} must name layers 1..{model.n_layers} (LayerLocal's chain c trains layer c)")
    initial = model.init_params()
    acts = [model.layer_activation(layer) for layer in range(1, model.n_layers + 1)]
    turn = itertools.cycle(chains or [0])

    def step() -> list[Params]:
        params = list(initial)
        layer = next(turn)
        if layer:
            chain_step(model, params, layer, acts, x, y, lr)
        else:
            sgd_step(model, params, [None] * model.n_layers, acts, x, y, lr, 0.0)
        return params

    return step


def train_reference_layerlocal(
    model: MLP,
    data: Dataset,
    schedule: LayerLocal,
    *,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 0.05,
    momentum: float = 0.0,
    max_steps: int | None = None,
    seed: int | None = None,
    on_sync: Callable[[int, list[Params]], None] | None = None,
    k_at: Callable[[int], int] | None = None,
    syncs: Sequence[int] | None = None,
) -> list[Params]:
    """LayerLocal as a plain loop: intervals of ``schedule.k`` steps (restarting each epoch), one chain per layer.

    ``on_sync(step, params)`` is called with the merged weights after every sync.
    ``k_at(epoch)``: a different interval per epoch (as :class:`~dagtrain.schedules.adaptive.Adaptive` chooses).
    ``syncs``: the run's sync steps, any spacing (as Adaptive on drift chose them); each epoch's end must be one.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        x_all, y_all = data.read_split("train")
        seed = model.seed if seed is None else seed
        n, L = len(y_all), model.n_layers
        params = model.init_params()
        velocity: list[Params | None] = [None] * L
        acts = [model.layer_activation(layer) for layer in range(1, L + 1)]
        per_epoch = steps_per_epoch(n, batch_size)
        total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
        for epoch in range(epochs):
            order = epoch_order(n, data.chunk_size, seed, epoch)
            k = schedule.k if k_at is None else k_at(epoch)
            if syncs is None:
                ends = [min(a + k, per_epoch) for a in range(0, per_epoch, k)]
            else:
                ends = [s - epoch * per_epoch for s in syncs if epoch * per_epoch < s <= (epoch + 1) * per_epoch]
            for a, interval_end in zip([0, *ends[:-1]], ends, strict=True):
                snapshot, own, momentum_at_snapshot = list(params), list(params), list(velocity)
                for b in range(a, interval_end):
                    step = epoch * per_epoch + b
                    if step >= total:
                        break
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    for c in schedule.chains_at(step, L):  # chain c trains layer c (0-based c - 1)
                        weights = [own[j] if j == c - 1 else snapshot[j] for j in range(L)]
                        if schedule.compensate:  # read each other layer where its momentum takes it by now
                            for j in range(L):
                                missed = schedule.missed_updates(j + 1, epoch * per_epoch + a, step, L)
                                v = momentum_at_snapshot[j]
                                if j != c - 1 and missed and v is not None:
                                    weights[j] = predict_params(snapshot[j], v, missed * lr)
                        logits, caches = forward_all(weights, acts, x_all[idx])
                        _, grad = loss_and_grad(logits, y_all[idx], model.loss)
                        for i in range(L - 1, c - 2, -1):
                            grads, grad_in = dense_backward(weights[i], caches[i], grad, acts[i], need_input_grad=i > c - 1)
                            if grad_in is not None:
                                grad = grad_in
                        scale = schedule.staleness_scale(b, a) if schedule.damping else 1.0
                        own[c - 1], velocity[c - 1] = sgd_update(own[c - 1], velocity[c - 1], grads, lr * scale, momentum)
                params = own
                end = min(epoch * per_epoch + interval_end, total)
                if on_sync is not None:
                    on_sync(end, params)
                if end >= total:
                    return params
        return params


def train_reference_localsgd(
    model: MLP,
    data: Dataset,
    schedule: LocalSGD,
    *,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 0.05,
    momentum: float = 0.0,
    max_steps: int | None = None,
    seed: int | None = None,
) -> list[Params]:
    """LocalSGD as a plain loop: copy the model to R replicas, train each on its batches, average every k steps.

    Intervals of ``schedule.k`` steps restart each epoch; step ``s`` trains replica ``s mod R``.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        x_all, y_all = data.read_split("train")
        seed = model.seed if seed is None else seed
        n, L, R = len(y_all), model.n_layers, schedule.replicas
        params = model.init_params()
        velocity: list[Params | None] = [None] * L
        acts = [model.layer_activation(layer) for layer in range(1, L + 1)]
        per_epoch = steps_per_epoch(n, batch_size)
        total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
        for epoch in range(epochs):
            order = epoch_order(n, data.chunk_size, seed, epoch)
            for a in range(0, per_epoch, schedule.k):
                replicas = [(list(params), list(velocity)) for _ in range(R)]
                end = min(epoch * per_epoch + min(a + schedule.k, per_epoch), total)
                for step in range(epoch * per_epoch + a, end):
                    b = step - epoch * per_epoch
                    p, v = replicas[schedule.replica_of(step) - 1]
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    logits, caches = forward_all(p, acts, x_all[idx])
                    _, grad = loss_and_grad(logits, y_all[idx], model.loss)
                    for i in range(L - 1, -1, -1):
                        grads, grad_in = dense_backward(p[i], caches[i], grad, acts[i], need_input_grad=i > 0)
                        if grad_in is not None:
                            grad = grad_in
                        p[i], v[i] = sgd_update(p[i], v[i], grads, lr, momentum)
                averaged = [average_params([r[0][i] for r in replicas]) for i in range(L)]
                params = [q for q in averaged if q is not None]
                velocity = [average_params([r[1][i] for r in replicas]) for i in range(L)]
                if end >= total:
                    return params
        return params


def train_reference_delayed(
    model: MLP,
    data: Dataset,
    schedule: DelayedGradient,
    window_starts: Sequence[int],
    *,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 0.05,
    momentum: float = 0.0,
    max_steps: int | None = None,
    seed: int | None = None,
) -> list[Params]:
    """DelayedGradient as a plain loop: stage s's forward at step t uses the weights of step ``t - d_s``.

    ``window_starts``: the first step of every window of the plan (``[w.step0 for w in plan.windows]``);
    the pipeline is flushed there, so no read goes back past a window's start.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        x_all, y_all = data.read_split("train")
        seed = model.seed if seed is None else seed
        n, L = len(y_all), model.n_layers
        params = model.init_params()
        velocity: list[Params | None] = [None] * L
        acts = [model.layer_activation(layer) for layer in range(1, L + 1)]
        delays = [schedule.delay(schedule.stage_of(layer, L)) for layer in range(1, L + 1)]
        per_epoch = steps_per_epoch(n, batch_size)
        total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
        versions: list[dict[int, Params]] = [{} for _ in range(L)]  # layer -> {step t: weights at the start of t}
        starts = sorted(window_starts)
        for step in range(total):
            epoch, b = divmod(step, per_epoch)
            if b == 0:
                order = epoch_order(n, data.chunk_size, seed, epoch)
            start = starts[bisect.bisect_right(starts, step) - 1]
            for i in range(L):
                versions[i][step] = params[i]
                versions[i].pop(step - delays[i] - 1, None)  # never read again
            used = [versions[i][max(step - delays[i], start)] for i in range(L)]
            idx = order[b * batch_size : (b + 1) * batch_size]
            logits, caches = forward_all(used, acts, x_all[idx])
            _, grad = loss_and_grad(logits, y_all[idx], model.loss)
            for i in range(L - 1, -1, -1):
                weights = used[i] if schedule.stashing else params[i]
                grads, grad_in = dense_backward(weights, caches[i], grad, acts[i], need_input_grad=i > 0)
                if grad_in is not None:
                    grad = grad_in
                params[i], velocity[i] = sgd_update(params[i], velocity[i], grads, lr, momentum)
        return params


def train_reference_hybrid(
    model: MLP,
    data: Dataset,
    schedule: Hybrid,
    *,
    batch_size: int = 128,
    epochs: int = 1,
    lr: float = 0.05,
    momentum: float = 0.0,
    seed: int | None = None,
) -> list[Params]:
    """Hybrid as a plain loop: R replicas take the steps in turn; inside each, LayerLocal chains.

    Every ``local.k`` steps a replica's chains merge into its snapshot; every ``replicas.k``
    steps (and at each epoch's end) all chains are averaged over the replicas. Intervals
    restart each epoch.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        x_all, y_all = data.read_split("train")
        seed = model.seed if seed is None else seed
        n, L, R = len(y_all), model.n_layers, schedule.replicas.replicas
        k, k2 = schedule.local.k, schedule.replicas.k
        acts = [model.layer_activation(layer) for layer in range(1, L + 1)]
        per_epoch = steps_per_epoch(n, batch_size)
        params: list[Params] = model.init_params()
        velocity: list[Params | None] = [None] * L
        for epoch in range(epochs):
            order = epoch_order(n, data.chunk_size, seed, epoch)
            own: dict[tuple[int, int], tuple[Params, Params | None]] = {}  # (replica, layer) -> since the average
            snapshot = {r: list(params) for r in range(1, R + 1)}
            for a in range(0, per_epoch, k):
                b = min(a + k, per_epoch)
                for batch in range(a, b):
                    step = epoch * per_epoch + batch
                    r = schedule.replicas.replica_of(step)
                    idx = order[batch * batch_size : (batch + 1) * batch_size]
                    for c in schedule.local.chains_at(step // R, L):
                        mine, v = own.get((r, c), (params[c - 1], velocity[c - 1]))
                        weights = [mine if j == c else snapshot[r][j - 1] for j in range(1, L + 1)]
                        logits, caches = forward_all(weights, acts, x_all[idx])
                        _, grad = loss_and_grad(logits, y_all[idx], model.loss)
                        for i in range(L - 1, c - 2, -1):
                            grads, grad_in = dense_backward(weights[i], caches[i], grad, acts[i], need_input_grad=i > c - 1)
                            if grad_in is not None:
                                grad = grad_in
                        own[(r, c)] = sgd_update(mine, v, grads, lr, momentum)
                latest = {(r, j): own.get((r, j), (params[j - 1], velocity[j - 1]))
                          for r in range(1, R + 1) for j in range(1, L + 1)}
                if b % k2 == 0 or b == per_epoch:
                    averaged = [average_params([latest[(r, j)][0] for r in range(1, R + 1)]) for j in range(1, L + 1)]
                    params = [p for p in averaged if p is not None]
                    velocity = [average_params([latest[(r, j)][1] for r in range(1, R + 1)]) for j in range(1, L + 1)]
                    own.clear()
                    snapshot = {r: list(params) for r in range(1, R + 1)}
                else:
                    snapshot = {r: [latest[(r, j)][0] for j in range(1, L + 1)] for r in range(1, R + 1)}
        return params
