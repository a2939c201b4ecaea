"""A Sphinx directive that prints the ``dagtrain`` command's help, and each subcommand's, from the real parser.

    ```{cli-help}
    ```

The CLI reference can therefore never drift from the code.
"""

from __future__ import annotations

import argparse
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def help_texts() -> list[tuple[str, str]]:
    """``(title, help text)`` for ``dagtrain`` and each of its subcommands, in the parser's order."""
    import os

    from dagtrain.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the same width on every machine
    parser = build_parser()
    texts = [("dagtrain", parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [(f"dagtrain {name}", sub.format_help()) for name, sub in action.choices.items()]
    return texts


class CliHelp(SphinxDirective):
    """Insert a section with a literal block per command."""

    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for title, text in help_texts():
            section = nodes.section(ids=[nodes.make_id(title)])
            section += nodes.title(text=title)
            section += nodes.literal_block(text, text, language="text")
            out.append(section)
        return out


def setup(app: Any) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
