"""``unetkit`` command line: one sub-command per module, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from ..errors import TrainingInterrupted, UnetkitError
from ..version import __version__

#: the commands, in the order of the help; each module is imported when the parser is built, so that
#: ``unetkit --version`` answers before torch is imported (see :func:`main`)
COMMANDS = (
    "demo",
    "synth",
    "check_data",
    "weights",
    "plan",
    "train",
    "predict",
    "evaluate",
    "review",
    "models",
    "export",
)


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not when the handler was made: ``main`` may
    run many times in one process (tests, notebooks) with stderr redirected differently each time."""

    @property
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
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error instead of one line"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # a command's clock (train --time-budget) starts with its process; called in-process (argv given), now
    args_given = sys.argv[1:] if argv is None else list(argv)
    if "--version" in _global_flags(args_given):  # what argparse would print, without importing every command
        print(f"unetkit {__version__}")
        return 0
    from ..device import process_started, tune_allocator

    started = process_started() if argv is None else time.perf_counter()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parser, args.command, unknown)
    args.started = started
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logger = logging.getLogger("unetkit")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("unetkit: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    tune_allocator()  # tensors reuse freed memory instead of faulting in fresh pages (device.tune_allocator)
    previous = _forward_sigterm()
    try:
        return int(args.run(args) or 0)
    except TrainingInterrupted as exc:
        print(f"unetkit {args.command}: {exc}", file=sys.stderr)
        return 130
    except UnetkitError as exc:
        if args.debug:
            raise
        print(f"unetkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unetkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError, UnicodeError, FloatingPointError, OverflowError) as exc:
        if args.debug:
            raise
        print(
            f"unetkit {args.command}: error: {describe_fault(exc, args.command)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug shows as a bug: one line, and the traceback kept in a file to report
        if args.debug:
            raise
        first = (str(exc).splitlines() or [""])[0][:200]
        print(
            f"unetkit {args.command}: internal error ({type(exc).__name__}{': ' + first if first else ''}): a bug in "
            f"unetkit, not in your data or options; {_keep_traceback(args.command)} (please report it; --debug "
            "shows it here)",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _global_flags(argv: list[str]) -> list[str]:
    """The arguments before the command's name: the top-level flags (``--version``, ``-v``, ``--debug``)."""
    flags = []
    for arg in argv:
        if not arg.startswith("-"):
            break
        flags.append(arg)
    return flags


def _refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """An unknown argument is refused by the command's own parser (its usage, not the top level's), with the
    nearest flag of that command when one is close (``--instnces`` → ``--instances``)."""
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = [f for action in sub._actions for f in action.option_strings if f.startswith("--")]
    hints = []
    for arg in unknown:
        near = (
            difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1, cutoff=0.75)
            if arg.startswith("--")
            else []
        )
        hints.append(f"{arg} (did you mean {near[0]}?)" if near else arg)
    sub.error(f"unrecognized arguments: {' '.join(hints)}")


def _keep_traceback(command: str) -> str:
    """Write the exception being handled to a file in unetkit's private temporary folder; where it went."""
    import traceback

    text = traceback.format_exc()
    try:
        from ..inference.writers import temp_root

        path = temp_root() / f"traceback-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        path.write_text(f"unetkit {__version__}: {' '.join(sys.argv)}\n{text}")
        return f"the traceback is in {path}"
    except Exception:  # nowhere to write: show it here instead
        sys.stderr.write(text)
        return "the traceback is above"


#: what to change when a command runs out of memory, in its own options
_MEMORY_FIXES = {
    "train": "train on smaller patches or batches (--patch-size, --batch-size), or a smaller network "
    "(--base-channels, --depth), or on a machine with more memory",
    "synth": "generate smaller images (--size, --depth), or on a machine with more memory",
    "predict": "use smaller tiles or batches (--tile, --batch), or a machine with more memory",
}


def describe_fault(exc: BaseException, command: str | None = None) -> str:
    """One line for a fault the user did not cause by a wrong option: what happened, where, and the fix (for
    ``command``'s own options)."""
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        fixes = {
            errno.ENOSPC: "the disk is full: free space or write elsewhere (--out)",
            errno.EDQUOT: "the disk quota is exhausted: free space or write elsewhere (--out)",
            errno.EROFS: "the file system is read-only: write elsewhere (--out)",
            errno.EACCES: "permission denied: choose a folder you may write to, or fix the permissions",
            errno.EPERM: "operation not permitted: choose a folder you may write to, or fix the permissions",
            errno.EFBIG: "the file is too large for this file system or limit: write elsewhere (--out)",
            errno.ENOENT: "no such file or folder",
        }
        return where + fixes.get(exc.errno or 0, exc.strerror or str(exc))
    if isinstance(exc, MemoryError):
        return "out of memory: " + _MEMORY_FIXES.get(command or "", _MEMORY_FIXES["predict"])
    if isinstance(exc, UnicodeError):
        return f"a text file is not UTF-8 ({exc}); save it as UTF-8"
    return f"numeric failure: {exc}"


def _forward_sigterm():
    """SIGTERM (timeout, SLURM, Kubernetes) gets the same clean shutdown as Ctrl-C: it calls whatever SIGINT
    handler is current (the trainer's deferred stop, or KeyboardInterrupt), so work folders are removed and a
    run ends at a checkpoint. Returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def forward(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, forward)


if __name__ == "__main__":
    sys.exit(main())
