"""The docs hold promises the tests keep: every row of the errors catalogue names tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
