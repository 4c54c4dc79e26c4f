"""What the ``crossrank`` subcommands share: the model and chunking options (derived from
:mod:`crossrank.options`), loading a :class:`~crossrank.Reranker` from them, and
:class:`UsageError`.

The command modules (:mod:`crossrank.rank_cli`, :mod:`crossrank.eval.cli`,
:mod:`crossrank.server.cli`, :mod:`crossrank.distributed.cli`, ...) import these from here, below
the entry point (:mod:`crossrank.cli`), which imports the command modules.
"""

from __future__ import annotations

import argparse
from typing import Any

from crossrank.errors import CrossrankError
from crossrank.hub import BUNDLED_OFFER, DEFAULT_MODEL
from crossrank.options.views import add_flags, from_args


class UsageError(CrossrankError):
    """Bad command-line usage detected after parsing."""


def add_model_args(p: argparse.ArgumentParser, *, multiple: bool = False) -> None:
    """The model options shared by every subcommand that loads a reranker: ``--model`` and
    the flag of every flagged :class:`~crossrank.options.Options` field.

    With ``multiple``, ``--model`` may be repeated (a list, possibly empty) instead of being
    one required value; :func:`load_reranker` then takes the model as its ``model`` argument.
    """
    if multiple:
        p.add_argument(
            "--model",
            "-m",
            action="append",
            default=[],
            help=f"checkpoint directory, hub id or the bundled {BUNDLED_OFFER}; repeat to "
            "compare several models",
        )
    else:
        p.add_argument(
            "--model",
            "-m",
            default=DEFAULT_MODEL,
            help=f"checkpoint directory, hub id, or the bundled offline {BUNDLED_OFFER} "
            f"(default: {DEFAULT_MODEL})",
        )
    add_flags(p)


def add_chunk_args(p: argparse.ArgumentParser) -> None:
    """Long-document options of the commands that score documents (score, rank, eval): the
    flagged fields of :class:`~crossrank.options.ChunkSpec`."""
    add_flags(p, chunks=True)


def load_reranker(args: argparse.Namespace, model: str | None = None, **extra: Any):
    """A :class:`~crossrank.Reranker` from the options of :func:`add_model_args`.

    ``model`` overrides ``args.model`` (for commands that take several models).
    """
    from crossrank.reranker import Reranker

    # checked before the model loads: a bad value is one InputError (exit 2)
    options = {k: v for k, v in from_args(args).items() if k != "chunking"}
    return Reranker(args.model if model is None else model, **options, **extra)


def score_options(args: argparse.Namespace) -> dict[str, Any]:
    """The per-call options of :func:`add_chunk_args` for ``compute_score`` / ``rank``:
    ``chunking`` when a chunk flag is given."""
    chunking = from_args(args).get("chunking")
    return {"chunking": chunking} if chunking is not None else {}
