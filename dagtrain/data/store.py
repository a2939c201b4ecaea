"""Datasets as zarr stores, chunked along samples, read a chunk at a time by the tasks.

Layout of a store (a zarr v3 group)::

    <path>/                    attrs: format, n_features, n_classes, chunk_size, splits
      train/x  (n, n_features) float32, chunks (chunk_size, n_features)
      train/y  (n,)            int32,   chunks (chunk_size,)
      test/x, test/y, ...      the same for every other split

Chunks are stored uncompressed by default: a 128-row chunk of MNIST reads about 2x
faster than with zstd on these machines, and reading is on the training path.
``x`` is filled with NaN and ``y`` with -1 where a chunk is missing, so a truncated
store is caught when a task reads the chunk, with the store, split and chunk named.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dagtrain.data.atomic import atomic_directory
from dagtrain.errors import ConfigError, CorruptStoreError, DataError, StoreNotFoundError

FORMAT = "dagtrain.dataset/1"
Array = np.ndarray


BLOCK_BYTES = 16 * 2**20  # rows of x read, checked and written at a time: a dask or zarr x never sits whole in memory


def _as_array(x: Any) -> Any:
    """``x`` itself when it is array-like with a shape and dtype (numpy, dask, zarr), else ``np.asarray(x)``."""
    return x if hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__") else np.asarray(x)


def _rows(x: Any, lo: int, hi: int) -> Array:
    """Rows lo:hi of ``x`` as a numpy array: computes only those rows of a dask array, reads only those of a zarr one."""
    part = x[lo:hi]
    compute = getattr(part, "compute", None)
    return np.asarray(compute() if callable(compute) else part)


def _check_features(name: str, x: Any) -> None:
    """Shape and dtype of ``x``, from its metadata alone."""
    if len(x.shape) != 2:
        raise DataError(f"split {name!r}: x must be 2-D (samples, features), got shape {tuple(x.shape)}; "
                        "reshape it, e.g. x.reshape(len(x), -1)")
    dtype = np.dtype(x.dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise DataError(f"split {name!r}: x has dtype {dtype}; it must be numeric")


def _check_finite(name: str, block: Array, lo: int) -> Array:
    """``block`` (rows from sample ``lo`` on) as float32; refuses NaN and inf, naming the first."""
    block = block.astype(np.float32, copy=False)
    bad = ~np.isfinite(block)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"split {name!r}: x holds {int(bad.sum())} NaN or inf values, the first at sample {lo + row}, "
            f"feature {col}; clean or impute the data before writing it"
        )
    return block


def _check_labels(name: str, y: Any, n: int, n_classes: int | None) -> Array:
    """``y`` as int32 class labels of ``n`` samples, checked."""
    compute = getattr(y, "compute", None)
    y = np.asarray(compute() if callable(compute) else y)
    if y.ndim != 1:
        raise DataError(f"split {name!r}: y must be 1-D integer class labels, got shape {y.shape}")
    if n != len(y):
        raise DataError(f"split {name!r}: x has {n} samples but y has {len(y)}; they must match")
    if n == 0:
        raise DataError(f"split {name!r} is empty")
    if not np.issubdtype(y.dtype, np.integer) and (not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0)):
        raise DataError(f"split {name!r}: y must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
        hi = "" if n_classes is None else f" and below n_classes={n_classes}"
        i = int(np.argmax((y < 0) | (y >= (n_classes if n_classes is not None else np.inf))))
        raise DataError(f"split {name!r}: label y[{i}] = {y[i]} is out of range; labels must be >= 0{hi}")
    labels: Array = y.astype(np.int32)
    return labels


def write_dataset(
    path: str | os.PathLike[str],
    splits: Mapping[str, tuple[Any, Any]],
    *,
    chunk_size: int,
    n_classes: int | None = None,
    overwrite: bool = False,
    compress: bool = False,
    source: str = "",
) -> Dataset:
    """Validate the splits and write them as one zarr store, atomically.

    Each split is ``(x, y)``: ``x`` (samples, features) numeric, ``y`` (samples,) integer
    labels. ``x`` may be a numpy, dask or zarr array (or anything numpy can convert): it
    is read, checked and written a block of rows at a time, so a dask or zarr ``x`` larger
    than memory is fine; ``y`` is read whole.
    The store is written into a temporary directory beside ``path`` and renamed into
    place only when complete, so an error or a kill never leaves a half-written store.
    ``n_classes`` defaults to the largest label plus one.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ConfigError(f"chunk_size (batch_size) = {chunk_size!r} must be a positive integer, e.g. 128")
    if "train" not in splits:
        raise DataError(f"the splits {sorted(splits)} have no 'train' split")
    arrays = {name: _as_array(x) for name, (x, _) in splits.items()}
    for name, x in arrays.items():
        _check_features(name, x)
    labels = {name: _check_labels(name, y, int(arrays[name].shape[0]), n_classes) for name, (_, y) in splits.items()}
    widths = {name: int(x.shape[1]) for name, x in arrays.items()}
    if len(set(widths.values())) != 1:
        raise DataError(f"splits disagree on the number of features: {widths}")
    if n_classes is None:
        n_classes = int(max(int(y.max()) for y in labels.values())) + 1
    n_features = next(iter(widths.values()))
    attrs = {
        "format": FORMAT,
        "n_features": n_features,
        "n_classes": int(n_classes),
        "chunk_size": int(chunk_size),
        "splits": {name: len(y) for name, y in labels.items()},
        "source": source,
    }
    block = int(chunk_size) * max(1, BLOCK_BYTES // (int(chunk_size) * max(n_features, 1) * 4))
    compressors: Any = "auto" if compress else None
    with atomic_directory(path, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        for name, x in arrays.items():
            y = labels[name]
            out = root.create_array(f"{name}/x", shape=(len(y), n_features), dtype="float32",
                                    chunks=(chunk_size, n_features), compressors=compressors, fill_value=np.nan)
            for lo in range(0, len(y), block):
                hi = min(lo + block, len(y))
                out[lo:hi] = _check_finite(name, _rows(x, lo, hi), lo)
            root.create_array(f"{name}/y", shape=y.shape, dtype="int32", chunks=(chunk_size,),
                              compressors=compressors, fill_value=-1)[...] = y
        root.attrs.update(attrs)  # type: ignore[arg-type]
    return open_dataset(path)


def to_zarr(
    x: Any,
    y: Any,
    path: str | os.PathLike[str],
    batch_size: int,
    *,
    test: tuple[Any, Any] | None = None,
    n_classes: int | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Write training samples ``x`` (n, features) and labels ``y`` (n,) to a zarr store.

    ``x`` may be a numpy, dask or zarr array: it is copied a block of rows at a time.

    Chunks hold ``batch_size`` samples, so one training step reads one chunk. ``test``
    adds a held-out split used for the test accuracy. Returns the opened :class:`Dataset`.
    """
    splits = {"train": (x, y)}
    if test is not None:
        splits["test"] = test
    return write_dataset(path, splits, chunk_size=batch_size, n_classes=n_classes, overwrite=overwrite)


@functools.lru_cache(maxsize=64)
def _open_arrays(path: str, split: str) -> tuple[Any, Any]:
    root = zarr.open_group(path, mode="r")
    return root[f"{split}/x"], root[f"{split}/y"]


def _raw_chunk_file(array: Any, chunk: int) -> Path | None:
    """The file of chunk ``chunk`` when it can be read as raw bytes, else None.

    That is so for an unsharded zarr v3 array in a local directory whose only codec is
    little-endian bytes (how dagtrain writes by default). Reading such a file with numpy
    takes 0.3 ms per MNIST chunk against 1.9 ms through zarr's async path, and, on the
    threaded scheduler, stops the reads from contending for the GIL with training.
    """
    meta = array.metadata
    codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
    store = array.store_path.store
    if (len(codecs) != 1 or type(codecs[0]).__name__ != "BytesCodec" or str(getattr(codecs[0].endian, "value", ""))
            != "little" or not hasattr(store, "root") or not array.dtype.isnative):
        return None
    key = meta.encode_chunk_key((chunk, *([0] * (array.ndim - 1))))
    return Path(str(store.root)) / str(array.store_path.path) / str(key)


def _read_rows(array: Any, chunk: int, lo: int, hi: int, out: Array | None = None) -> Array:
    """Rows lo:hi of ``array`` (exactly chunk ``chunk``), by the raw file when possible.

    ``out``: a C-contiguous array of the rows' shape to read into (the file's bytes go
    straight there), else a new array.
    """
    path = _raw_chunk_file(array, chunk)
    shape = (array.chunks[0], *array.shape[1:])
    if path is None:
        rows = np.asarray(array[lo:hi])
    elif not path.exists():  # a missing chunk reads as the fill value, as zarr would
        rows = np.full((hi - lo, *shape[1:]), array.fill_value, dtype=array.dtype)
    elif out is not None and path.stat().st_size == int(np.prod(shape)) * array.dtype.itemsize:
        with open(path, "rb") as f:  # only the chunk's first hi - lo rows: a last chunk is padded
            if f.readinto(out.data.cast("B")) != out.nbytes:  # out is C-contiguous: its buffer is its rows
                raise ValueError(f"chunk file {path} ended early")
        return out
    else:
        flat = np.fromfile(path, dtype=array.dtype)
        if flat.size != int(np.prod(shape)):
            raise ValueError(f"chunk file {path} holds {flat.size} values, expected {int(np.prod(shape))}")
        rows = flat.reshape(shape)[: hi - lo]
    if out is None:
        return rows
    out[...] = rows
    return out


@dataclass(frozen=True)
class Dataset:
    """A handle on a dataset store: plain metadata, cheap to pickle and send to a worker.

    Tasks call :meth:`read_chunk` to read only the chunks they need.
    """

    path: str
    n_features: int
    n_classes: int
    chunk_size: int
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    version: tuple[int, int] = (0, 0)
    """The store directory's (inode, mtime in ns) when opened: a store rewritten at the same path is a new version."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_sizes", dict(self.split_sizes))

    def size(self, split: str = "train") -> int:
        """Number of samples in ``split``."""
        if split not in self.split_sizes:
            raise ConfigError(f"dataset {self.path} has no split {split!r}; it has {sorted(self.split_sizes)}")
        return self.split_sizes[split]

    def n_chunks(self, split: str = "train") -> int:
        """Number of chunks ``split`` is stored in."""
        return -(-self.size(split) // self.chunk_size)

    def read_chunk(self, split: str, chunk: int) -> tuple[Array, Array]:
        """Read chunk ``chunk`` of ``split``: (x float32, y int32); checks it is whole."""
        return self.read_chunks(split, [chunk])

    def read_chunks(self, split: str, chunks: Sequence[int],
                    out: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
        """Read ``chunks`` of ``split`` into one (x, y), in the order given; checks each is whole.

        ``out``: C-contiguous float32 ``x`` and int32 ``y`` arrays of exactly the chunks' rows
        to read into (the files' bytes go straight there), else new arrays.
        """
        sizes = [min((c + 1) * self.chunk_size, self.size(split)) - c * self.chunk_size for c in chunks]
        if out is None:
            x = np.empty((sum(sizes), self.n_features), dtype=np.float32)
            y = np.empty(sum(sizes), dtype=np.int32)
        else:
            x, y = out
            if x.shape != (sum(sizes), self.n_features) or y.shape != (sum(sizes),) or not x.flags.c_contiguous:
                raise ValueError(f"out has shapes {x.shape} and {y.shape}; chunks {list(chunks)} of split {split!r} "
                                 f"need C-contiguous ({sum(sizes)}, {self.n_features}) and ({sum(sizes)},)")
        at = 0
        for chunk, size in zip(chunks, sizes, strict=True):
            lo, hi = chunk * self.chunk_size, chunk * self.chunk_size + size
            where = f"store {self.path}, split {split!r}, chunk {chunk} (samples {lo}:{hi})"
            if not 0 <= chunk < self.n_chunks(split):
                raise IndexError(f"{where} does not exist; {split!r} has chunks 0..{self.n_chunks(split) - 1}")
            xs, ys = x[at : at + size], y[at : at + size]
            try:
                xa, ya = _open_arrays(self.path, split)
                _read_rows(xa, chunk, lo, hi, out=xs)
                _read_rows(ya, chunk, lo, hi, out=ys)
            except Exception as exc:  # zarr raises many kinds; all mean the same thing here
                raise CorruptStoreError(f"cannot read {where}: {exc}; rewrite the store") from exc
            if (ys < 0).any() or np.isnan(xs[:, 0]).any():
                raise CorruptStoreError(f"{where} is missing or truncated; rewrite the store")
            at += size
        return x, y

    def read_split(self, split: str) -> tuple[Array, Array]:
        """Read a whole split into memory, chunk by chunk (with the same checks)."""
        return self.read_chunks(split, range(self.n_chunks(split)))


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a store written by :func:`to_zarr` or :func:`write_dataset` and check its structure."""
    p = Path(path).expanduser()
    if not p.exists():
        raise StoreNotFoundError(f"no dataset store at {p}; write one with dagtrain.to_zarr(x, y, {str(p)!r}, batch_size)")
    try:
        root = zarr.open_group(str(p), mode="r")
        attrs = dict(root.attrs)
    except Exception as exc:
        raise CorruptStoreError(f"{p} is not a readable zarr store ({exc}); delete it and write it again") from exc
    if attrs.get("format") != FORMAT:
        raise CorruptStoreError(
            f"{p} is not a dagtrain dataset store (format {attrs.get('format')!r}, expected {FORMAT!r}); "
            "delete it and write it again with dagtrain.to_zarr"
        )
    meta: dict[str, Any] = attrs
    ds = Dataset(str(p.resolve()), int(meta["n_features"]), int(meta["n_classes"]), int(meta["chunk_size"]),
                 {k: int(v) for k, v in meta["splits"].items()}, (p.stat().st_ino, p.stat().st_mtime_ns))
    for split, n in ds.split_sizes.items():
        try:
            xa, ya = root[f"{split}/x"], root[f"{split}/y"]
            assert isinstance(xa, zarr.Array) and isinstance(ya, zarr.Array)
        except (KeyError, AssertionError) as exc:
            raise CorruptStoreError(f"{p}: split {split!r} is listed but its arrays are missing; rewrite the store") from exc
        if xa.shape != (n, ds.n_features) or ya.shape != (n,) or xa.dtype != np.float32 or ya.dtype != np.int32:
            raise CorruptStoreError(
                f"{p}: split {split!r} has x {xa.shape} {xa.dtype} and y {ya.shape} {ya.dtype}, expected "
                f"x ({n}, {ds.n_features}) float32 and y ({n},) int32; rewrite the store"
            )
    return ds
