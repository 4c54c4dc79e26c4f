"""The one progress rule of the library and every command.

A progress bar is drawn only where someone watches it: ``show`` True draws it, False never,
None (the default everywhere) draws it when stderr is a terminal (or a notebook's output) and
the job is big enough to need one. A log file or a pipe never gets one: tqdm's ``\\r`` redraws
would be thousands of lines there.

:func:`on_batches` lets a caller follow the batches of the scoring calls it makes (what
:func:`crossrank.scoring.score_stream` does, so that ``crossrank score``'s bar moves once per
forward pass rather than once per chunk of 4096 pairs); the engine reports to it through
:func:`report_batch`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import IO, Any

#: called with (inputs done, inputs in the call) after each batch of a scoring call
BatchListener = Callable[[int, int], None]

_listener: ContextVar[BatchListener | None] = ContextVar("crossrank_batch_listener", default=None)


def interactive(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal or a notebook's output."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # closed or not a file
        return False
    return type(stream).__module__.startswith("ipykernel")  # tqdm.auto draws a widget there


def wanted(show: bool | None, *, big: bool = True) -> bool:
    """The rule: ``show`` when given; else a ``big`` job on a terminal (:func:`interactive`)."""
    if show is not None:
        return bool(show)
    return big and interactive()


def bar(*, show: bool | None, total: int | None, desc: str, unit: str, big: bool = True, **kw: Any):
    """A tqdm bar on stderr, disabled unless :func:`wanted` (``kw`` goes to tqdm)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not wanted(show, big=big),
        dynamic_ncols=True,
        **kw,
    )


@contextlib.contextmanager
def on_batches(listener: BatchListener) -> Iterator[None]:
    """Call ``listener(done, total)`` after each batch of the scoring calls made inside."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def listening() -> bool:
    """Whether a caller follows the batches (the engine then draws no bar of its own)."""
    return _listener.get() is not None


def report_batch(done: int, total: int) -> None:
    """Tell the listener of :func:`on_batches`, if any, that ``done`` of ``total`` are scored."""
    listener = _listener.get()
    if listener is not None:
        listener(done, total)
