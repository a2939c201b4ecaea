"""Batches in epoch order, gathered from a per-process cache of pools.

An epoch's order (:func:`dagtrain.data.order.epoch_layout`) shuffles samples within pools
of a few whole chunks. The first batch that needs a pool reads the pool's chunk files
straight into one array and notes where each of the pool's samples sits in it; every
batch is then one gather of its own rows (``x[rows]``), done by the task that needs it:
the same one gather per sample as the plain in-memory loop.

Building a pool is only reading files (about 1.5 ms for a 4-chunk MNIST pool), and a
thread that needs a pool another thread is building waits for it. Two earlier designs
cost more: gathering the whole pool into epoch order at build time (5-28 ms per pool,
while with LayerLocal every chain waits for the same pools at a window's start), and
gathering each batch from its chunks one chunk at a time (160 us per batch against 14 us).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from dagtrain.data.order import epoch_layout
from dagtrain.data.store import Array, Dataset

PoolKey = tuple[str, str, int, int, int]  # (store path, split, seed, epoch, pool)
Pool = tuple[Array, Array, np.ndarray]  # the pool's chunks as one (x, y); its samples' rows in them, in epoch order


class BatchReader:
    """A thread-safe LRU of pools, bounded by ``max_bytes``; one per process."""

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._pools: OrderedDict[PoolKey, Pool] = OrderedDict()
        self._building: dict[PoolKey, threading.Lock] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.pools_built = 0

    def batch(self, dataset: Dataset, split: str, seed: int, epoch: int, batch: int, batch_size: int) -> tuple[Array, Array]:
        """Samples of batch ``batch`` of epoch ``epoch``, in epoch order (new read-only arrays)."""
        n = dataset.size(split)
        _, bounds = epoch_layout(n, dataset.chunk_size, seed, epoch)
        lo, hi = batch * batch_size, min((batch + 1) * batch_size, n)
        if not 0 <= lo < hi:
            raise IndexError(f"batch {batch} of size {batch_size} is outside the {n} samples of split {split!r}")
        first, last = (int(np.searchsorted(bounds, pos, side="right")) - 1 for pos in (lo, hi - 1))
        parts = []
        for p in range(first, last + 1):
            px, py, rows = self._pool(dataset, split, seed, epoch, p)
            start = int(bounds[p])
            take = rows[max(lo, start) - start : min(hi, int(bounds[p + 1])) - start]
            parts.append((px[take], py[take]))
        x, y = parts[0] if len(parts) == 1 else (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
        x.setflags(write=False)
        y.setflags(write=False)
        return x, y

    def _pool(self, dataset: Dataset, split: str, seed: int, epoch: int, p: int) -> Pool:
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
            pool = self._build(dataset, split, seed, epoch, p)
            with self._lock:
                self._pools[key] = pool
                self._bytes += sum(a.nbytes for a in pool)
                self._building.pop(key, None)
                self.pools_built += 1
                while self._bytes > self.max_bytes and len(self._pools) > 1:
                    _, old = self._pools.popitem(last=False)
                    self._bytes -= sum(a.nbytes for a in old)
            return pool

    @staticmethod
    def _build(dataset: Dataset, split: str, seed: int, epoch: int, p: int) -> Pool:
        order, bounds = epoch_layout(dataset.size(split), dataset.chunk_size, seed, epoch)
        chunk_of, row_of = np.divmod(order[bounds[p] : bounds[p + 1]], dataset.chunk_size)
        chunks = np.unique(chunk_of)
        x, y = dataset.read_chunks(split, [int(c) for c in chunks])
        offset = np.zeros(int(chunks.max()) + 1, dtype=np.int64)
        offset[chunks] = np.arange(len(chunks)) * dataset.chunk_size  # only the split's last chunk is short, and it sorts last
        rows = offset[chunk_of] + row_of
        for a in (x, y, rows):
            a.setflags(write=False)
        return x, y, rows

    def clear(self) -> None:
        """Forget every cached pool (after a store is rewritten, or to time a cold run)."""
        with self._lock:
            self._pools.clear()
            self._bytes = 0


BATCHES = BatchReader()
