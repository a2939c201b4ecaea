"""The interval experiment: runs, measurements beside the seed's formula, and the files it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import dagtrain as dt
from dagtrain.cli import main
from dagtrain.execute.trace import TaskRecord
from dagtrain.experiments import save, sweep
from dagtrain.experiments.sweep import sync_gaps

BLOBS = {"sizes": (12, 16, 8, 3), "activation": "relu", "loss": "softmax_xent"}


def test_sync_gaps_measure_idle_time_between_intervals() -> None:
    tasks = [TaskRecord("chain1-0-w0", 0.0, 1.0, "a"), TaskRecord("chain2-0-w0", 0.0, 1.5, "b"),
             TaskRecord("sync-s5-w0", 1.5, 1.6, "a"),
             TaskRecord("chain1-1-w0", 1.75, 2.0, "a"), TaskRecord("chain2-1-w0", 1.8, 2.2, "b"),
             TaskRecord("eval-p0-w0", 2.25, 2.35, "a"), TaskRecord("eval-w0", 2.3, 2.4, "b"),
             TaskRecord("chain1-0-w1", 2.5, 3.0, "a"), TaskRecord("load-0-w0", 0, 9, "c")]
    assert sync_gaps(tasks) == pytest.approx([0.25, 0.3 - 0.15])  # evaluation inside a gap is not sync time


def test_sweep_measures_every_k_and_mode_against_the_formula(blobs: dt.Dataset, tmp_path: Path) -> None:
    result = sweep(blobs, preset="deep", intervals=(20, 4, 1), batch_size=16, epochs=2, lr=0.1, momentum=0.0, **BLOBS)
    assert [(r["schedule"], r["k"], r["data"]) for r in result.rows] == [
        ("sync-1", None, None), ("sync-2", None, None),
        *[("layerlocal", k, m) for m in ("shared", "sharded") for k in (20, 4, 1)]]
    base = result.row("sync-1")
    assert base["speedup"] == 1.0 and base["workers"] == 1
    k4 = result.row("layerlocal", 4, "sharded")
    # 38 steps per epoch, intervals restart each epoch: ceil(38 / 4) syncs per epoch.
    assert k4["syncs"] == 2 * 10 and k4["samples_between_syncs"] == 2 * 600 // 20
    assert k4["speedup"] == pytest.approx(base["wall_time"] / k4["wall_time"])
    predicted = base["wall_time"] / 2 + k4["syncs"] * k4["t_sync_ms"] / 1e3
    assert k4["predicted_speedup"] == pytest.approx(base["wall_time"] / predicted)
    assert result.row("layerlocal", 1, "shared")["test_accuracy"] == base["test_accuracy"]  # k=1 shared is Sync
    paths = save(result, tmp_path / "out", command="pytest")
    assert paths["plot.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["table.md"].read_text()
    assert "| layerlocal | 4 | sharded | 2 | 60 | 20 |" in table and "Reproduce: `pytest`" in table
    rows = list(csv.DictReader(paths["table.csv"].read_text().splitlines()))
    assert len(rows) == 8 and rows[2]["k"] == "20"
    settings = json.loads(paths["settings.json"].read_text())
    assert settings["batch_size"] == 16 and settings["versions"]["numpy"] and settings["command"] == "pytest"
    assert not list((tmp_path / "out").glob(".*tmp*"))  # nothing half-written left behind


def test_sweep_refuses_bad_settings_before_running(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match="k = 0 must be a positive integer"):
        sweep(blobs, intervals=(10, 0), **BLOBS, batch_size=16)
    with pytest.raises(dt.ConfigError, match="k = 500 is larger than the 38 steps"):
        sweep(blobs, intervals=(500,), **BLOBS, batch_size=16)
    with pytest.raises(dt.ConfigError, match="unknown data mode 'both'"):
        sweep(blobs, modes=("both",), **BLOBS)
    with pytest.raises(dt.ConfigError, match="unknown preset 'huge'"):
        sweep(blobs, preset="huge")
    with pytest.raises(dt.ConfigError, match=r"unknown sweep setting\(s\) \['width'\]"):
        sweep(blobs, width=3)


@pytest.mark.mnist
def test_sweep_command_on_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    code = main(["sweep", "--intervals", "100,10", "--modes", "sharded", "--max-steps", "2000", "--quiet",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| layerlocal | 100 | sharded |" in text and f"results written to {out}" in text
    assert {p.name for p in out.iterdir()} == {"table.md", "table.csv", "settings.json", "plot.png"}
    assert main(["sweep", "--intervals", "5000", "--max-steps", "100", "--quiet", "--out", str(out)]) == 2
    assert "k = 5000 is larger than the 100 steps" in capsys.readouterr().err


def test_sweep_with_staleness_damping_records_it(blobs: dt.Dataset, tmp_path: Path) -> None:
    plain = sweep(blobs, preset="deep", intervals=(8,), modes=("sharded",), batch_size=16, epochs=1, **BLOBS)
    damped = sweep(blobs, preset="deep", intervals=(8,), modes=("sharded",), batch_size=16, epochs=1, damping=0.5, **BLOBS)
    assert damped.settings.damping == 0.5
    assert damped.row("layerlocal", 8, "sharded")["train_loss"] != plain.row("layerlocal", 8, "sharded")["train_loss"]
    assert damped.row("sync-1")["train_loss"] == plain.row("sync-1")["train_loss"]  # Sync has nothing to damp
    paths = save(damped, tmp_path / "damped", command="pytest")
    assert "staleness damping 0.5" in paths["table.md"].read_text()
    assert json.loads(paths["settings.json"].read_text())["damping"] == 0.5


def test_sweep_with_delay_compensation_records_it(blobs: dt.Dataset, tmp_path: Path) -> None:
    plain = sweep(blobs, preset="deep", intervals=(8,), modes=("sharded",), batch_size=16, epochs=1, **BLOBS)
    predicted = sweep(blobs, preset="deep", intervals=(8,), modes=("sharded",), batch_size=16, epochs=1, compensate=True,
                      **BLOBS)
    assert predicted.row("layerlocal", 8, "sharded")["train_loss"] != plain.row("layerlocal", 8, "sharded")["train_loss"]
    assert predicted.row("sync-1")["train_loss"] == plain.row("sync-1")["train_loss"]
    paths = save(predicted, tmp_path / "predicted", command="pytest")
    assert "delay compensation (weight prediction)" in paths["table.md"].read_text()
    assert json.loads(paths["settings.json"].read_text())["compensate"] is True
