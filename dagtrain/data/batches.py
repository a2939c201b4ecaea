"""Batches in epoch order, served from a per-process cache of shuffled pools.

An epoch's order (:func:`dagtrain.data.order.epoch_layout`) shuffles samples within pools
of a few whole chunks. The first batch that needs a pool reads the pool's chunks and
gathers its rows into epoch order once; every batch of that pool is then a slice (a view,
no copy). That is one gather per sample, the same work the plain in-memory loop does,
instead of one masked gather per chunk per batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from dagtrain.data.order import epoch_layout
from dagtrain.data.store import Array, Dataset

PoolKey = tuple[str, str, int, int, int]  # (store path, split, seed, epoch, pool)


class BatchReader:
    """A thread-safe LRU of shuffled pools, bounded by ``max_bytes``; one per process."""

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._pools: OrderedDict[PoolKey, tuple[Array, Array]] = OrderedDict()
        self._building: dict[PoolKey, threading.Lock] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.pools_built = 0

    def batch(self, dataset: Dataset, split: str, seed: int, epoch: int, batch: int, batch_size: int) -> tuple[Array, Array]:
        """Samples of batch ``batch`` of epoch ``epoch``, in epoch order (read-only arrays)."""
        n = dataset.size(split)
        _, bounds = epoch_layout(n, dataset.chunk_size, seed, epoch)
        lo, hi = batch * batch_size, min((batch + 1) * batch_size, n)
        if not 0 <= lo < hi:
            raise IndexError(f"batch {batch} of size {batch_size} is outside the {n} samples of split {split!r}")
        first, last = (int(np.searchsorted(bounds, pos, side="right")) - 1 for pos in (lo, hi - 1))
        parts = []
        for p in range(first, last + 1):
            x, y = self._pool(dataset, split, seed, epoch, p)
            a, b = max(lo, int(bounds[p])) - int(bounds[p]), min(hi, int(bounds[p + 1])) - int(bounds[p])
            parts.append((x[a:b], y[a:b]))
        if len(parts) == 1:
            return parts[0]
        x, y = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
        x.setflags(write=False)
        y.setflags(write=False)
        return x, y

    def _pool(self, dataset: Dataset, split: str, seed: int, epoch: int, p: int) -> tuple[Array, Array]:
        key = (dataset.path, split, seed, epoch, p)
        with self._lock:
            hit = self._pools.get(key)
            if hit is not None:
                self._pools.move_to_end(key)
                return hit
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one thread builds a pool; others needing it wait, others' pools proceed
            with self._lock:
                hit = self._pools.get(key)
            if hit is not None:
                return hit
            x, y = self._build(dataset, split, seed, epoch, p)
            with self._lock:
                self._pools[key] = (x, y)
                self._bytes += x.nbytes + y.nbytes
                self._building.pop(key, None)
                self.pools_built += 1
                while self._bytes > self.max_bytes and len(self._pools) > 1:
                    _, (ox, oy) = self._pools.popitem(last=False)
                    self._bytes -= ox.nbytes + oy.nbytes
            return x, y

    @staticmethod
    def _build(dataset: Dataset, split: str, seed: int, epoch: int, p: int) -> tuple[Array, Array]:
        order, bounds = epoch_layout(dataset.size(split), dataset.chunk_size, seed, epoch)
        idx = order[bounds[p] : bounds[p + 1]]
        chunk_of, row_of = np.divmod(idx, dataset.chunk_size)
        chunks = np.unique(chunk_of)
        read = [dataset.read_chunk(split, int(c)) for c in chunks]
        offset = np.zeros(int(chunks.max()) + 1, dtype=np.int64)
        offset[chunks] = np.cumsum([0] + [len(y) for _, y in read[:-1]])
        local = offset[chunk_of] + row_of
        x = np.concatenate([x for x, _ in read])[local]
        y = np.concatenate([y for _, y in read])[local]
        x.setflags(write=False)
        y.setflags(write=False)
        return x, y

    def clear(self) -> None:
        """Forget every cached pool (after a store is rewritten, or to time a cold run)."""
        with self._lock:
            self._pools.clear()
            self._bytes = 0


BATCHES = BatchReader()
