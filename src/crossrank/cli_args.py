"""What the ``crossrank`` subcommands share: the model and chunking options, loading a
:class:`~crossrank.Reranker` from them, and :class:`UsageError`.

The command modules (:mod:`crossrank.rank_cli`, :mod:`crossrank.eval.cli`,
:mod:`crossrank.server.cli`, :mod:`crossrank.distributed.cli`, ...) import these from here, below
the entry point (:mod:`crossrank.cli`), which imports the command modules.
"""

from __future__ import annotations

import argparse
from typing import Any

from crossrank.errors import CrossrankError
from crossrank.hub import BUNDLED_MODEL, DEFAULT_MODEL


class UsageError(CrossrankError):
    """Bad command-line usage detected after parsing."""


def add_model_args(p: argparse.ArgumentParser, *, multiple: bool = False) -> None:
    """The model options shared by every subcommand that loads a reranker.

    With ``multiple``, ``--model`` may be repeated (a list, possibly empty) instead of being
    one required value; :func:`load_reranker` then takes the model as its ``model`` argument.
    """
    if multiple:
        p.add_argument(
            "--model",
            "-m",
            action="append",
            default=[],
            help="checkpoint directory or hub id; repeat to compare several models",
        )
    else:
        p.add_argument(
            "--model",
            "-m",
            default=DEFAULT_MODEL,
            help=f"checkpoint directory, hub id, or the bundled offline {BUNDLED_MODEL} "
            f"(default: {DEFAULT_MODEL})",
        )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32 (default), fp16, bf16")
    p.add_argument("--max-length", type=int, default=512, help="longest pair in tokens (512)")
    p.add_argument("--batch-size", type=int, default=None, help="most pairs per forward pass")
    p.add_argument("--normalize", action="store_true", help="sigmoid scores instead of logits")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx", "auto"),
        default="torch",
        help="torch (default, exact), onnx (ONNX Runtime, needs crossrank[onnx]), or auto "
        "(the fastest faithful backend for this machine)",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="int8: dynamic int8 quantization (with --backend onnx)",
    )
    p.add_argument("--prompt", default=None, help="LLM rerankers: the instruction after the pair")
    p.add_argument(
        "--instruction",
        default=None,
        help="rerankers with a task instruction in their template (Qwen3-Reranker)",
    )
    p.add_argument(
        "--cutoff-layers",
        type=int,
        nargs="+",
        default=None,
        help="layerwise rerankers: score at this layer (the first one given)",
    )


def add_chunk_args(p: argparse.ArgumentParser) -> None:
    """Long-document options of the commands that score documents (score, rank, eval)."""
    p.add_argument(
        "--max-chunks-per-doc",
        type=int,
        default=None,
        help="score a passage longer than fits by its best window, of at most N windows",
    )
    p.add_argument(
        "--chunk-overlap",
        type=int,
        default=None,
        help="tokens shared by consecutive windows (32)",
    )
    p.add_argument(
        "--max-tokens-per-doc",
        type=int,
        default=None,
        help="read at most N tokens of each passage",
    )


#: options of :func:`add_model_args` with the values commands that lack them get
MODEL_DEFAULTS: dict[str, Any] = {
    "backend": "torch",
    "quantize": None,
    "prompt": None,
    "instruction": None,
    "cutoff_layers": None,
}


def load_reranker(args: argparse.Namespace, model: str | None = None, **extra: Any):
    """A :class:`~crossrank.Reranker` from the options of :func:`add_model_args`.

    ``model`` overrides ``args.model`` (for commands that take several models).
    """
    from crossrank.reranker import Reranker

    given = {k: vars(args).get(k, v) for k, v in MODEL_DEFAULTS.items()}
    return Reranker(
        args.model if model is None else model,
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        batch_size=args.batch_size,
        normalize=args.normalize,
        **given,
        **extra,
    )


def score_options(args: argparse.Namespace) -> dict[str, Any]:
    """The per-call options of :func:`add_chunk_args` for ``compute_score`` / ``rank``."""
    names = ("max_chunks_per_doc", "chunk_overlap", "max_tokens_per_doc")
    return {k: vars(args)[k] for k in names if vars(args).get(k) is not None}
