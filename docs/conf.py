"""Sphinx configuration of the dagtrain docs: MyST Markdown pages, API reference from the docstrings.

Build: ``tox -e docs`` (warnings are errors), or ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagtrain

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "dagtrain"
author = "the dagtrain developers"
copyright = "2026, the dagtrain developers"  # noqa: A001 - Sphinx's name for it
release = version = dagtrain.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "cli_help",  # docs/_ext/cli_help.py: the command line's --help texts, taken from the parser
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # links such as schedules.md#localsgd-model-averaging-every-k-steps

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_numpy_docstring = True
napoleon_google_docstring = False

html_theme = "pydata_sphinx_theme"
html_title = f"dagtrain {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []
