"""The examples run, in a quick mode, as a user would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_inspect_graph_example() -> None:
    out = run("inspect_graph.py")
    assert "fwd:L2:s1 reads: [('params', 'upd:L2:s0', 'params'), ('x', 'fwd:L1:s1', 'out')]" in out
    assert "fwd:L1:s1 waits for upd:L2:s0? False" in out
    times = re.search(r"ideal machine ([\d.]+) ms, measured cost model ([\d.]+) ms, ran ([\d.]+) ms", out)
    assert times is not None, out
    ideal, measured, ran = (float(v) for v in times.groups())
    # A tiny model's tasks are mostly hand-overs and glue: the ideal machine is far too fast, the measured model is not.
    assert 0 < ideal < measured and ran > 0


@pytest.mark.mnist
def test_quickstart_example(mnist_data: object) -> None:
    out = run("quickstart.py", "--max-steps", "40")
    assert "test accuracy" in out and "Plan: sync" in out


@pytest.mark.mnist
def test_interval_sweep_example(mnist_data: object, tmp_path: Path) -> None:
    out = run("interval_sweep.py", "--intervals", "50,5", "--max-steps", "300", "--out", str(tmp_path / "r"))
    assert "| layerlocal | 50 | sharded |" in out and "LayerLocal(k=5, data='shared')" in out
    assert (tmp_path / "r" / "plot.png").stat().st_size > 10_000


@pytest.mark.mnist
def test_custom_pass_example(mnist_data: object) -> None:
    out = run("custom_pass.py", "--max-steps", "30")
    assert out.count("-> freeze_L1 -> pack_lanes -> sync_per_lane -> fuse") == 2  # under Sync and under LayerLocal
    assert out.count("layer 1: unchanged") == 2 and out.count("layer 2: trained") == 2
    assert out.count("layer 3: trained") == 2


@pytest.mark.mnist
def test_sklearn_estimator_example(mnist_data: object) -> None:
    out = run("sklearn_estimator.py", "--quick")
    first = float(out.split("test accuracy ", 1)[1].split()[0])
    assert first > 0.8 and "cross-validated accuracy" in out and "best: {" in out
    assert "lazy predictions: dask.array<" in out
    assert f"accuracy from the dask predictions: {first:.4f}" in out  # the lazy path predicts the same classes


@pytest.mark.mnist
@pytest.mark.cluster
def test_cluster_dashboard_example(mnist_data: object, tmp_path: Path) -> None:
    """The dashboard the example prints answers while the cluster is up; the timeline and report are written."""
    import urllib.request

    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "cluster_dashboard.py"), "--max-steps", "40", "--pause", "5",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        link, lines = None, []
        for line in proc.stdout:  # the pause begins after training: the cluster is still up
            lines.append(line)
            if line.startswith("Dask dashboard: "):
                link = line.split(": ", 1)[1].strip()
            if line.startswith("keeping the dashboard up"):
                break
        assert link is not None and link.startswith("http://127.0.0.1:"), "".join(lines)
        with urllib.request.urlopen(link.replace("/status", "/info/main/workers.html"), timeout=10) as page:
            assert page.status == 200 and page.read().decode().count("tcp://127.0.0.1:") >= 2  # both workers
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    out = "".join(lines)
    assert "chains placed on workers" in out and "test accuracy" in out
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    assert "bokeh" in (tmp_path / "timeline.html").read_text().lower()
    assert "dask" in (tmp_path / "dask-report.html").read_text().lower()
