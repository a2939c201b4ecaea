"""Schedules compared on time-to-accuracy: the rows, the curves, the files, and the command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import dagtrain as dt
from dagtrain.cli import main
from dagtrain.experiments.compare import compare, markdown_table, parse_schedule, save, time_to

BLOBS = {"sizes": (12, 16, 8, 3)}


def test_schedule_specs_parse_or_say_how_to_write_them() -> None:
    assert parse_schedule("sync") == dt.Sync()
    assert parse_schedule("LayerLocal:10:sharded") == dt.LayerLocal(10, "sharded")
    assert parse_schedule("layerlocal:5") == dt.LayerLocal(5, "shared")
    assert parse_schedule("layerlocal:10:sharded:0.1") == dt.LayerLocal(10, "sharded", damping=0.1)
    assert parse_schedule("layerlocal:10:sharded:compensate") == dt.LayerLocal(10, "sharded", compensate=True)
    assert parse_schedule("layerlocal:10:sharded:0.1:compensate") == dt.LayerLocal(10, "sharded", damping=0.1, compensate=True)
    assert parse_schedule("localsgd:4:2") == dt.LocalSGD(4, 2)
    assert parse_schedule("delayed:2:3") == dt.DelayedGradient(2, 3)
    assert parse_schedule("hybrid:10:sharded:20:2") == dt.Hybrid(dt.LayerLocal(10, "sharded"), dt.LocalSGD(20, 2))
    assert parse_schedule("delayed:2:3:nostash") == dt.DelayedGradient(2, 3, stashing=False)
    for bad in ("sgd", "localsgd:4", "layerlocal:ten", "sync:3", "layerlocal:10:sharded:lots", "delayed:2:3:x"):
        with pytest.raises(dt.ConfigError, match=f"cannot read schedule '{bad}'"):
            parse_schedule(bad)
    with pytest.raises(dt.ConfigError, match="k = 5 must be a multiple of replicas = 2"):
        parse_schedule("localsgd:5:2")


def test_time_to_is_the_first_time_the_curve_reaches_the_target() -> None:
    curve = [(1.0, 0.90), (2.0, 0.96), (3.0, 0.95), (4.0, 0.975)]
    assert time_to(curve, 0.95) == 2.0 and time_to(curve, 0.97) == 4.0 and time_to(curve, 0.99) is None


def test_compare_trains_each_schedule_and_writes_its_files(blobs: dt.Dataset, tmp_path: Path) -> None:
    result = compare(blobs, ["localsgd:4:2", "layerlocal:4:sharded"], preset="deep", targets=(0.5, 0.999),
                     batch_size=16, epochs=3, lr=0.1, momentum=0.0, **BLOBS)
    assert [r["schedule"] for r in result.rows] == ["Sync()", "LocalSGD(k=4, replicas=2)",
                                                    "LayerLocal(k=4, data='sharded')"]
    sync = result.rows[0]
    assert sync["speedup"] == 1.0 and sync["speedup_to_50%"] == 1.0
    for row in result.rows:
        curve = result.curves[row["schedule"]]
        assert len(curve) == 3 and [t for t, _ in curve] == sorted(t for t, _ in curve)
        assert row["test_accuracy"] == curve[-1][1]
        assert row["time_to_50%"] == time_to(curve, 0.5)
    local = result.rows[1]
    assert local["speedup_to_50%"] == pytest.approx(sync["time_to_50%"] / local["time_to_50%"])
    assert "never" in markdown_table(result)  # nobody reaches 99.9% on these blobs in 3 epochs
    paths = save(result, tmp_path / "out", command="pytest")
    assert paths["plot.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduce: `pytest`" in paths["table.md"].read_text()
    assert len(list(csv.DictReader(paths["table.csv"].read_text().splitlines()))) == 3
    assert json.loads(paths["curves.json"].read_text())["Sync()"] == [list(p) for p in result.curves["Sync()"]]
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_compare_refuses_bad_settings_before_running(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match="accuracy target 97 must be in"):
        compare(blobs, ["sync"], targets=(97,), **BLOBS)
    with pytest.raises(dt.ConfigError, match="unknown preset 'huge'"):
        compare(blobs, ["sync"], preset="huge")
    with pytest.raises(dt.ConfigError, match="LocalSGD k = 500 is larger than the 38 steps"):
        compare(blobs, ["localsgd:500:2"], batch_size=16, epochs=1, **BLOBS)


@pytest.mark.mnist
def test_compare_command_on_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", "--schedules", "localsgd:10:2", "--max-steps", "300", "--targets", "0.9",
                 "--quiet", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| LocalSGD(k=10, replicas=2) |" in text and "s to 90%" in text
    assert {p.name for p in out.iterdir()} == {"table.md", "table.csv", "curves.json", "settings.json", "plot.png"}
    assert main(["compare", "--schedules", "pipeline:3", "--quiet", "--out", str(out)]) == 2
    assert "cannot read schedule 'pipeline:3'" in capsys.readouterr().err
