"""The docs hold promises the tests keep: the site builds clean; every errors-catalogue row names a real test."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_REF = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)`")


def defined_tests(path: Path) -> set[str]:
    """The names of the test functions defined in ``path``."""
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_errors_catalogue_row_names_an_existing_test() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    assert len(rows) >= 40
    missing = []
    for row in rows:
        refs = TEST_REF.findall(row)
        assert refs, f"row without a test: {row}"
        missing += [f"{f}::{name}" for f, name in refs if name not in defined_tests(ROOT / f)]
    assert not missing, f"docs/errors.md names tests that do not exist: {missing}"


@pytest.mark.slow
def test_docs_site_builds_without_a_warning(tmp_path: Path) -> None:
    """The Sphinx site (as ``tox -e docs`` builds it) builds with warnings as errors, every page and API entry in it."""
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"),
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    api = (tmp_path / "api.html").read_text()
    for name in ("dagtrain.compile", "dagtrain.LayerLocal", "dagtrain.sklearn.DagMLPClassifier", "DivergenceError"):
        assert name in api
    assert "dagtrain sweep" in (tmp_path / "cli.html").read_text()  # the CLI reference comes from the parser
    assert "Two commands on a fresh machine" in (tmp_path / "quickstart.html").read_text()  # included from the README
    for page in ("howto/cluster", "howto/dashboard", "howto/checkpoints", "howto/choosing-k", "howto/custom-pass",
                 "howto/sklearn", "concepts", "results", "performance", "errors", "changelog"):
        assert (tmp_path / f"{page}.html").exists(), page
