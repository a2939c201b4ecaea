"""The order samples are visited in: decided from (seed, epoch) before anything runs.

Each epoch permutes the chunks, then shuffles samples within pools of consecutive
(permuted) chunks of about ``pool`` samples. A run of steps therefore touches only
the chunks of its pools, so a task reads few chunks, and every sample is visited
exactly once per epoch. Every scheduler, and the reference loop, use this one function.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def epoch_layout(n: int, chunk_size: int, seed: int, epoch: int, pool: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(order, bounds)``: the visiting order of epoch ``epoch`` and where its pools start and end.

    Pool ``p`` is ``order[bounds[p]:bounds[p + 1]]``: a shuffle of whole chunks. Both arrays are read-only.
    """
    rng = np.random.default_rng([seed, epoch])
    n_chunks = -(-n // chunk_size)
    per_pool = max(1, pool // chunk_size)
    chunks = rng.permutation(n_chunks)
    parts = []
    for g in range(0, n_chunks, per_pool):
        ids = np.concatenate([np.arange(c * chunk_size, min((c + 1) * chunk_size, n)) for c in chunks[g : g + per_pool]])
        parts.append(rng.permutation(ids))
    order = np.concatenate(parts)
    bounds = np.cumsum([0] + [len(p) for p in parts])
    order.setflags(write=False)
    bounds.setflags(write=False)
    return order, bounds


@functools.lru_cache(maxsize=8)
def epoch_pools(n: int, chunk_size: int, seed: int, epoch: int, pool: int = 4096) -> tuple[tuple[int, ...], ...]:
    """The chunks each pool of epoch ``epoch`` shuffles: pool ``p`` holds exactly the samples of ``epoch_pools(...)[p]``."""
    chunks = np.random.default_rng([seed, epoch]).permutation(-(-n // chunk_size))  # epoch_layout's first draw
    per_pool = max(1, pool // chunk_size)
    return tuple(tuple(int(c) for c in chunks[g : g + per_pool]) for g in range(0, len(chunks), per_pool))


def epoch_order(n: int, chunk_size: int, seed: int, epoch: int, pool: int = 4096) -> np.ndarray:
    """Indices of the ``n`` samples in the order epoch ``epoch`` visits them (read-only)."""
    return epoch_layout(n, chunk_size, seed, epoch, pool)[0]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Steps in one epoch; the last batch may be smaller (no sample is dropped)."""
    return -(-n // batch_size)


def batch_indices(n: int, chunk_size: int, seed: int, epoch: int, batch: int, batch_size: int) -> np.ndarray:
    """Indices of batch ``batch`` of epoch ``epoch``."""
    return epoch_order(n, chunk_size, seed, epoch)[batch * batch_size : (batch + 1) * batch_size]
