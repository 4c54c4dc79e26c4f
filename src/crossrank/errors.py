"""Exceptions raised for problems the user can fix (bad input, missing model, bad options).

The CLI turns every :class:`CrossrankError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class CrossrankError(Exception):
    """Base class of all user-facing errors raised by crossrank."""


class ModelLoadError(CrossrankError):
    """The model directory, hub id, config or weights cannot be used."""


class UnsupportedModelError(ModelLoadError):
    """The checkpoint's architecture is not one crossrank implements."""


class InputError(CrossrankError, ValueError):
    """Malformed input data (pairs, documents, files)."""


class MissingExtraError(CrossrankError, ImportError):
    """An optional dependency group (``pip install 'crossrank[extra]'``) is not installed."""


def missing_extra(extra: str, package: str) -> ImportError:
    """Build the ImportError raised when an optional dependency group is not installed."""
    return MissingExtraError(
        f"this feature needs the optional dependency {package!r}: pip install 'crossrank[{extra}]'"
    )


class OutputError(CrossrankError):
    """An output location cannot be written (missing directory, not writable, a directory)."""
