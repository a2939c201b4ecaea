"""The command line as a newcomer meets it: the command list, every command's help and examples, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dagtrain as dt
from dagtrain.cli import build_parser, main

COMMANDS = ["train", "sweep", "compare", "inspect", "data"]


def test_top_level_help_lists_every_command() -> None:
    """The installed console script, as a newcomer types it."""
    script = Path(sys.executable).parent / "dagtrain"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    listed = [line.split()[0] for line in out.split("  COMMAND\n", 1)[1].splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert listed == COMMANDS
    assert "examples:" in out and "--json" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples_and_json(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:\n", 1)[1]
    assert examples.count(f"dagtrain {command}") >= 2  # at least two worked examples
    assert "--json" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"dagtrain {dt.__version__}"


def test_data_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_data import _idx_dir  # small IDX files in MNIST's format, written by the data tests

    assert main(["data", "--mnist-source", str(_idx_dir(tmp_path)), "--store", str(tmp_path / "m.zarr"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str((tmp_path / "m.zarr").resolve())
    assert report["n_features"] == 784 and report["n_classes"] == 10 and set(report["splits"]) >= {"train", "test"}
