"""The ``crossrank`` command line: one entry point, one subcommand per job.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code). User errors are printed
as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from crossrank._version import __version__
from crossrank.distributed.cli import add_ray_args
from crossrank.errors import CrossrankError
from crossrank.files import open_input, parse_json_object, read_jsonl, require_str
from crossrank.hub import BUNDLED_MODEL, DEFAULT_MODEL

logger = logging.getLogger("crossrank")

#: modules that add subcommands (each defines ``register(subparsers)``)
COMMAND_MODULES: tuple[str, ...] = (
    "crossrank.cli",
    "crossrank.eval.cli",
    "crossrank.server.cli",
    "crossrank.train.cli",
    "crossrank.demo",
)


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
_MODEL_DEFAULTS: dict[str, Any] = {
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

    given = {k: vars(args).get(k, v) for k, v in _MODEL_DEFAULTS.items()}
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


# -- score -------------------------------------------------------------------------------


def cmd_score(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        from crossrank.distributed.cli import score_with_ray

        return score_with_ray(args)
    rows, pairs = [], []
    for lineno, obj in read_jsonl(args.input):
        where = f"{args.input}:{lineno}"
        pairs.append((require_str(obj, "query", where), require_str(obj, "passage", where)))
        rows.append(obj)
    reranker = load_reranker(args)
    scores = reranker.compute_score(pairs, **score_options(args)) if pairs else []
    lines = [
        json.dumps({**obj, "score": s}, ensure_ascii=False) + "\n" for obj, s in zip(rows, scores)
    ]
    if args.output == "-":
        sys.stdout.writelines(lines)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.writelines(lines)
    return 0


# -- rank --------------------------------------------------------------------------------


def read_documents(path: str) -> list[dict[str, Any]]:
    """Documents from JSON lines (``text``, optional ``id``) or plain text (one per line)."""
    docs: list[dict[str, Any]] = []
    with open_input(path) as fh:
        lines = fh.read().splitlines()
    first = next((line for line in lines if line.strip()), "")
    is_json = first.lstrip().startswith("{")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not is_json:
            docs.append({"text": line})
            continue
        obj = parse_json_object(line, f"{path}:{lineno}")
        require_str(obj, "text", f"{path}:{lineno}")
        docs.append(obj)
    return docs


def cmd_rank(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.top_k < 0:
        raise UsageError("--top-k must be >= 0")
    docs = read_documents(args.documents)
    reranker = load_reranker(args)
    results = reranker.rank(args.query, docs, top_k=args.top_k, **score_options(args))
    if args.json:
        for rank, r in enumerate(results, 1):
            row = {"rank": rank, "index": r.index, "score": r.score}
            if "id" in docs[r.index]:
                row["id"] = docs[r.index]["id"]
            row["text"] = docs[r.index]["text"]
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    width = 72
    print(f"{'rank':>4}  {'score':>10}  {'id':<12}  text")
    for rank, r in enumerate(results, 1):
        doc = docs[r.index]
        text = " ".join(doc["text"].split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        print(f"{rank:>4}  {r.score:>10.4f}  {str(doc.get('id', r.index)):<12}  {text}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score (query, passage) pairs from JSON lines")
    add_model_args(p)
    add_chunk_args(p)
    p.add_argument(
        "--input", "-i", required=True, help='JSON lines {"query", "passage"}; - = stdin'
    )
    p.add_argument("--output", "-o", default="-", help="output JSON lines (default stdout)")
    add_ray_args(p, files=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("rank", help="rank documents for one query")
    add_model_args(p)
    add_chunk_args(p)
    p.add_argument("--query", "-q", required=True)
    p.add_argument(
        "--documents", "-d", required=True, help="JSON lines with text (and id) or plain text"
    )
    p.add_argument("--top-k", "-k", type=int, default=None)
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=cmd_rank)


# -- entry point -------------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or usage)."""
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
    try:
        return int(args.func(args) or 0)
    except CrossrankError as exc:
        print(f"crossrank: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"crossrank: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("crossrank: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
