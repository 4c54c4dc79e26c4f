"""The ``crossrank`` command line: one entry point, one subcommand per job.

Each subcommand module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed arguments, returning an exit code). User
errors are printed as one line on stderr with exit code 2, never a traceback. This module is
the top of the import layers (docs/architecture.md): it imports the command modules, and none
of them imports it; what they share is in :mod:`crossrank.cli_args`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from crossrank._version import __version__
from crossrank.errors import CrossrankError

logger = logging.getLogger("crossrank")

#: modules that add subcommands (each defines ``register(subparsers)``)
COMMAND_MODULES: tuple[str, ...] = (
    "crossrank.rank_cli",
    "crossrank.eval.cli",
    "crossrank.server.cli",
    "crossrank.train.cli",
    "crossrank.demo",
    "crossrank.backends",
    "crossrank.verify.cli",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crossrank", description="Cross-encoder reranking.")
    parser.add_argument("--version", action="version", version=f"crossrank {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread, so that every ``finally`` runs and every
    atomic output removes its temporary (a BaseException: no ``except Exception`` stops it)."""


#: the exit code of a command ended by SIGTERM (128 + 15, as a shell reports it)
TERMINATED = 128 + signal.SIGTERM


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not stop the cleanup
    raise Terminated


@contextmanager
def sigterm_cleans_up() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` instead of killing the
    process on the spot (which would leave ``.tmp-*`` files); a command that handles SIGTERM
    itself (``serve``: drain) installs its own handler. Left alone off the main thread or when
    SIGTERM is ignored (``nohup``-like launchers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or usage, 143 after SIGTERM)."""
    with sigterm_cleans_up():
        try:
            return _run(argv)
        except Terminated:
            print("crossrank: terminated", file=sys.stderr)
            return TERMINATED


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("crossrank.scoring").setLevel(min(level, logging.INFO))  # summary line
    try:
        return int(args.func(args) or 0)
    except CrossrankError as exc:
        print(f"crossrank: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:
        message, code = describe_os_error(exc)
        print(f"crossrank: error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("crossrank: interrupted", file=sys.stderr)
        return 130


#: errors the user fixes by choosing or fixing a path: exit 2, like bad input
PATH_ERRORS = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EISDIR: "give a file name, not a directory",
    errno.EACCES: "check the permissions or choose another location",
    errno.EPERM: "check the permissions or choose another location",
    errno.EROFS: "choose a location on a writable file system",
    errno.ENAMETOOLONG: "use a shorter name",
}
#: errors of the machine, not of the command: exit 1
SPACE_ERRORS = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or write to another disk (disk quota exceeded)",
    errno.EFBIG: "the file system or a limit (ulimit -f) refuses a file this large",
}


def describe_os_error(exc: OSError) -> tuple[str, int]:
    """One line for an operating-system error, and the exit code: 2 for a path the user can
    fix (missing directory, permission, a directory given as a file), 1 otherwise (a full
    disk, an I/O error). Outputs are atomic, so a failed write leaves nothing behind."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = (exc.strerror or str(exc)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    if exc.errno in PATH_ERRORS:
        return f"{where}{reason}; {PATH_ERRORS[exc.errno]}", 2
    if exc.errno in SPACE_ERRORS:
        return f"{where}{reason}; {SPACE_ERRORS[exc.errno]}", 1
    return f"{where}{reason}", 1


if __name__ == "__main__":
    sys.exit(main())
