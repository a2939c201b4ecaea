"""A cluster started the way users start one (`dask scheduler` + `dask worker`), and losing a worker mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import dask
import pytest

import dagtrain as dt
from dagtrain.cli import main
from dagtrain.execute.cluster import TRIM_VARIABLE, trimming_workers
from tests.conftest import weights_equal

pytestmark = pytest.mark.cluster
MODEL = dt.MLP([12, 64, 32, 3], seed=5)
KW = {"batch_size": 8, "epochs": 3, "lr": 0.05, "momentum": 0.9, "window_steps": 25}


def test_runs_on_dask_scheduler_and_worker_processes(blobs: dt.Dataset, dask_cli_cluster: str) -> None:
    from distributed import Client

    plan = dt.compile(MODEL, blobs, dt.LayerLocal(5, "sharded"), **KW)
    with Client(dask_cli_cluster) as client:
        result = plan.run(client)
    assert result.scheduler == "distributed" and result.info["workers"] == 2
    assert weights_equal(result.weights, plan.run("sync").weights)
    workers = {r.worker.rsplit("/", 1)[0] for r in result.tasks if r.prefix.startswith("chain")}
    assert workers == set(result.info["placement"].values()) and len(workers) == 2


def test_clusters_started_as_documented_keep_glibc_malloc_defaults(local_cluster: object, dask_cli_cluster: str) -> None:
    """dt.local_cluster, and `dask worker` given the config file docs/howto/cluster.md shows: no malloc trim, BLAS at 1 thread."""
    from distributed import Client

    assert trimming_workers(local_cluster) == {}
    with Client(dask_cli_cluster) as client:
        assert trimming_workers(client) == {}
        assert set(client.run(os.environ.get, "OPENBLAS_NUM_THREADS").values()) == {"1"}


def test_a_cluster_whose_workers_trim_malloc_warns_once_naming_the_fix(blobs: dt.Dataset) -> None:
    from distributed import Client, LocalCluster

    plan = dt.compile(MODEL, blobs, dt.LayerLocal(5, "sharded"), **{**KW, "epochs": 1})
    had = TRIM_VARIABLE in os.environ
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE}": 65536}), \
                LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            assert list(trimming_workers(client).values()) == ["65536"]
            with pytest.warns(dt.PerformanceWarning, match=rf"{TRIM_VARIABLE}=65536 .*dagtrain.local_cluster\(\)"):
                first = plan.run(client)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                second = plan.run(client)  # once per cluster: no warning the second time
    finally:
        if not had:  # the nanny wrote it into this process's environment too, where later spawns would inherit it
            os.environ.pop(TRIM_VARIABLE, None)
    assert weights_equal(first.weights, second.weights)


def test_cli_connects_with_scheduler_address(blobs: dt.Dataset, dask_cli_cluster: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", blobs.path, "--layers", "12,16,3", "--epochs", "1", "--quiet",
                 "--scheduler-address", dask_cli_cluster, "--out", str(tmp_path / "w.zarr")])
    assert code == 0 and "on distributed" in capsys.readouterr().out


def test_unreachable_scheduler_is_an_error_not_a_hang(blobs: dt.Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    assert main(["train", "--data", blobs.path, "--layers", "12,16,3", "--scheduler-address", "tcp://127.0.0.1:9"]) == 2
    assert "no dask scheduler answers at tcp://127.0.0.1:9" in capsys.readouterr().err
    assert time.monotonic() - start < 30


def test_plan_run_takes_a_scheduler_address(blobs: dt.Dataset, dask_cli_cluster: str) -> None:
    kw = {"batch_size": 32, "epochs": 1, "lr": 0.1}
    plan = dt.compile(dt.MLP([12, 16, 3], seed=0), blobs, dt.LayerLocal(4, "sharded"), **kw)
    result = plan.run(dask_cli_cluster)
    assert result.scheduler == "distributed" and weights_equal(result.weights, plan.run("sync").weights)


def test_an_address_nothing_answers_at_is_an_error_within_the_timeout(blobs: dt.Dataset) -> None:
    start = time.monotonic()
    with pytest.raises(dt.ConfigError, match=r"no dask scheduler answers at tcp://127.0.0.1:9 within 10 s"):
        dt.compile(dt.MLP([12, 3]), blobs, max_steps=2).run("tcp://127.0.0.1:9")
    assert time.monotonic() - start < 30


def test_killing_a_worker_mid_run_changes_nothing(blobs: dt.Dataset, dask_cli_cluster: str) -> None:
    """SIGKILL one worker process while the run is going; the run completes with the fault-free weights."""
    from distributed import Client

    plan = dt.compile(MODEL, blobs, dt.LayerLocal(5, "sharded"), **KW)
    expected = plan.run("sync").weights
    with Client(dask_cli_cluster) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids)[1]
        killed = threading.Event()

        def kill_soon(done: int, total: int, info: dict[str, object]) -> None:
            if done >= total // 3 and not killed.is_set():
                killed.set()
                # Kill from another thread while the next window is running on the cluster.
                threading.Timer(0.05, os.kill, (pids[victim], signal.SIGKILL)).start()

        result = plan.run(client, progress=kill_soon)
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the next test
    assert killed.is_set() and result.info["resubmitted_windows"] >= 1  # the pinned window was rerun elsewhere
    assert weights_equal(result.weights, expected)


def test_dashboard_serves_status_and_task_stream(blobs: dt.Dataset, local_cluster: object) -> None:
    """The dashboard of a cluster that ran a plan answers on 127.0.0.1: /status and /tasks."""
    import urllib.request

    dt.compile(MODEL, blobs, dt.LayerLocal(5, "shared"), batch_size=16, epochs=1).run(local_cluster)
    link = local_cluster.dashboard_link  # type: ignore[attr-defined]
    assert link.startswith("http://127.0.0.1:")
    base = link.rsplit("/", 1)[0]
    for page in ("status", "tasks"):
        with urllib.request.urlopen(f"{base}/{page}", timeout=30) as response:
            assert response.status == 200 and b"bokeh" in response.read().lower()


def test_cli_dashboard_timeline_and_performance_report(blobs: dt.Dataset, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", blobs.path, "--layers", "12,16,8,3", "--epochs", "1", "--quiet",
                 "--schedule", "layerlocal", "--k", "5", "--dashboard", "--timeline", str(tmp_path / "run"),
                 "--performance-report", str(tmp_path / "report.html"), "--out", str(tmp_path / "w.zarr")])
    captured = capsys.readouterr()
    assert code == 0 and "Dask dashboard: http://127.0.0.1:" in captured.err
    assert (tmp_path / "run.html").stat().st_size > 10_000 and (tmp_path / "run.png").stat().st_size > 5_000
    assert "chain1" in (tmp_path / "run.html").read_text()
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert main(["train", "--data", blobs.path, "--layers", "12,16,3", "--performance-report", "x.html"]) == 2
    assert "--performance-report needs a distributed cluster" in capsys.readouterr().err


def test_cli_cluster_listens_on_the_host_asked_for(blobs: dt.Dataset, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """127.0.0.1 by default (above); ``--host`` picks another interface (here 127.0.0.2: another loopback address)."""
    code = main(["train", "--data", blobs.path, "--layers", "12,8,3", "--max-steps", "4", "--quiet", "--workers", "1",
                 "--host", "127.0.0.2", "--dashboard", "--out", str(tmp_path / "w.zarr")])
    assert code == 0 and "Dask dashboard: http://127.0.0.2:" in capsys.readouterr().err


# distributed leaks one unbound socket when a LocalCluster fails to bind its dashboard; that is
# its cleanup, not ours, and the failed start is the point of this test.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_cli_dashboard_takes_any_port_when_8787_is_taken_after_the_check(blobs: dt.Dataset, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs starting at once (parallel tox envs) both see 8787 free; the loser falls back to a free port."""
    import socket

    from dagtrain import cli

    with socket.socket() as taken:  # stands in for the other run: it holds the port the CLI prefers
        taken.bind(("127.0.0.3", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(cli, "DASHBOARD_PORT", port)
        monkeypatch.setattr(cli, "_port_free", lambda port, host="127.0.0.1": True)  # the check saw it free
        code = main(["train", "--data", blobs.path, "--layers", "12,8,3", "--max-steps", "4", "--quiet", "--workers", "1",
                     "--host", "127.0.0.3", "--dashboard", "--out", str(tmp_path / "w.zarr")])
    err = capsys.readouterr().err
    assert code == 0 and "Dask dashboard: http://127.0.0.3:" in err and f":{port}/" not in err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_timeline_renders_in_a_headless_browser(blobs: dt.Dataset, local_cluster: object, tmp_path: Path) -> None:
    """Open the timeline HTML in real headless Chromium and find each chain's colour in the screenshot."""
    import subprocess

    import matplotlib.image
    import numpy as np

    from dagtrain.report.timeline import colour_of

    # Chains with enough work per task that each one's bars are wide on the page, even on a busy machine.
    heavy = dt.MLP([12, 512, 512, 3], seed=0)
    result = dt.compile(heavy, blobs, dt.LayerLocal(15, "shared"), batch_size=32, epochs=2).run(local_cluster)
    page = result.timeline(tmp_path / "t.html")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,500",
                    "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = (matplotlib.image.imread(str(shot))[..., :3] * 255).round().astype(int)
    for chain in ("chain1", "chain2", "chain3"):
        rgb = np.array([int(colour_of(chain)[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=-1) <= 6).sum() > 20, f"{chain}'s bars are not on the page"
