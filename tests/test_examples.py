"""The examples run, in a quick mode, as a user would run them."""

from __future__ import annotations

import os
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


@pytest.mark.mnist
def test_quickstart_example(mnist_data: object) -> None:
    out = run("quickstart.py", "--max-steps", "40")
    assert "test accuracy" in out and "Plan: sync" in out


@pytest.mark.mnist
def test_interval_sweep_example(mnist_data: object, tmp_path: Path) -> None:
    out = run("interval_sweep.py", "--intervals", "50,5", "--max-steps", "300", "--out", str(tmp_path / "r"))
    assert "| layerlocal | 50 | sharded |" in out and "LayerLocal(k=5, data='shared')" in out
    assert (tmp_path / "r" / "plot.png").stat().st_size > 10_000
