"""``unetkit`` command line: one sub-command per module, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import UnetkitError
from ..training.trainer import TrainingInterrupted
from . import check_data, demo, evaluate, export, models, plan, predict, synth, train, weights

COMMANDS = (demo, synth, check_data, weights, plan, train, predict, evaluate, models, export)


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not when the handler was made: ``main`` may
    run many times in one process (tests, notebooks) with stderr redirected differently each time."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unetkit",
        description="Train U-Nets on annotated images and segment new images of any size.",
        epilog="Run 'unetkit COMMAND --help' for the options of a command. Start with 'unetkit demo'.",
    )
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logger = logging.getLogger("unetkit")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("unetkit: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    try:
        return int(args.run(args) or 0)
    except TrainingInterrupted as exc:
        print(f"unetkit {args.command}: {exc}", file=sys.stderr)
        return 130
    except UnetkitError as exc:
        print(f"unetkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unetkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
