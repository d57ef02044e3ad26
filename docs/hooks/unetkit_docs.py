"""mkdocs hooks: pages generated from the code, so the site cannot drift from it.

- ``index.md``: README.md, the front page (its ``docs/`` links made relative to the site);
- ``cli.md``: every command's ``--help``, from the parser the ``unetkit`` command builds.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def front_page() -> str:
    """README.md with its links into ``docs/`` made relative to the site's root."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def cli_reference() -> str:
    """Every command's help, as the terminal prints it, in the order ``unetkit --help`` lists them."""
    from unetkit.cli.main import build_parser

    os.environ.setdefault("COLUMNS", "110")  # argparse wraps to the terminal: one width for the site
    parser = build_parser()
    parser.prog = "unetkit"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [
        "# CLI reference\n\n",
        "Generated from the parser `unetkit` itself builds, when the site is built (`make docs`): the same text as\n",
        "`unetkit --help` and `unetkit COMMAND --help`.\n\n",
        "```text\n",
        parser.format_help(),
        "```\n",
    ]
    for name, command in sub.choices.items():
        command.prog = f"unetkit {name}"
        parts += [f"\n## `unetkit {name}`\n\n", "```text\n", command.format_help(), "```\n"]
    return "".join(parts)


def on_files(files: Files, config: Any) -> Files:
    for uri, content in (("index.md", front_page()), ("cli.md", cli_reference())):
        files.append(File.generated(config, uri, content=content))
    return files
