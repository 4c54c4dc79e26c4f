"""The ``crossrank`` command line: one entry point, one subcommand per job.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code). User errors are printed
as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from crossrank._version import __version__
from crossrank.distributed.cli import add_ray_args
from crossrank.errors import CrossrankError
from crossrank.files import (
    check_input,
    count_lines,
    iter_lines,
    parse_json_object,
    read_jsonl,
    require_str,
)
from crossrank.hub import BUNDLED_MODEL, DEFAULT_MODEL
from crossrank.scoring import DEFAULT_CHUNK_SIZE

logger = logging.getLogger("crossrank")

#: modules that add subcommands (each defines ``register(subparsers)``)
COMMAND_MODULES: tuple[str, ...] = (
    "crossrank.cli",
    "crossrank.eval.cli",
    "crossrank.server.cli",
    "crossrank.train.cli",
    "crossrank.demo",
    "crossrank.backends",
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
    from crossrank.atomic import check_output, open_output
    from crossrank.scoring import log_summary, score_stream

    check_input(args.input)
    check_output(args.output, what="--output")
    check_chunk_size(args.chunk_size)
    rows = read_pairs(args.input)
    ahead = deque(islice(rows, args.chunk_size))  # a bad first chunk fails before the model loads
    reranker = load_reranker(args, show_progress=False)
    pending: deque[dict[str, Any]] = deque()  # rows read and not yet written: one chunk

    def pairs() -> Iterator[tuple[str, str]]:
        while ahead:
            pair, obj = ahead.popleft()
            pending.append(obj)
            yield pair
        for pair, obj in rows:
            pending.append(obj)
            yield pair

    progress = sys.stderr.isatty()
    total = count_lines(args.input) if progress else None
    start, n = time.perf_counter(), 0
    with open_output(args.output) as out:
        for score in score_stream(
            reranker,
            pairs(),
            chunk_size=args.chunk_size,
            show_progress=progress,
            total=total,
            summary=False,
            **score_options(args),
        ):
            out.write(json.dumps({**pending.popleft(), "score": score}, ensure_ascii=False) + "\n")
            n += 1
    # after the output is complete (renamed into place): a failed write is the last line
    where = f" into {args.output}" if args.output != "-" else ""
    log_summary(n, time.perf_counter() - start, args.chunk_size, where)
    return 0


def read_pairs(path: str) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """``((query, passage), row)`` for each JSON line of ``path``, read lazily."""
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        yield (require_str(obj, "query", where), require_str(obj, "passage", where)), obj


def check_chunk_size(size: int) -> None:
    if size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {size}")


# -- rank --------------------------------------------------------------------------------


def read_documents(path: str) -> list[dict[str, Any]]:
    """Documents from JSON lines (``text``, optional ``id``) or plain text (one per line)."""
    docs: list[dict[str, Any]] = []
    is_json: bool | None = None
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        if is_json is None:  # the first non-blank line decides the format
            is_json = line.lstrip().startswith("{")
        if not is_json:
            docs.append({"text": line})
            continue
        obj = parse_json_object(line, f"{path}:{lineno}")
        require_str(obj, "text", f"{path}:{lineno}")
        docs.append(obj)
    return docs


def cmd_rank(args: argparse.Namespace) -> int:
    from crossrank.atomic import check_output, open_output

    if args.top_k is not None and args.top_k < 0:
        raise UsageError("--top-k must be >= 0")
    check_output(args.output, what="--output")
    docs = read_documents(args.documents)
    reranker = load_reranker(args)
    results = reranker.rank(args.query, docs, top_k=args.top_k, **score_options(args))
    with open_output(args.output) as out:
        if args.json:
            for rank, r in enumerate(results, 1):
                row = {"rank": rank, "index": r.index, "score": r.score}
                if "id" in docs[r.index]:
                    row["id"] = docs[r.index]["id"]
                row["text"] = docs[r.index]["text"]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            return 0
        width = 72
        out.write(f"{'rank':>4}  {'score':>10}  {'id':<12}  text\n")
        for rank, r in enumerate(results, 1):
            doc = docs[r.index]
            text = " ".join(doc["text"].split())
            text = text if len(text) <= width else text[: width - 1] + "…"
            out.write(f"{rank:>4}  {r.score:>10.4f}  {str(doc.get('id', r.index)):<12}  {text}\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score (query, passage) pairs from JSON lines")
    add_model_args(p)
    add_chunk_args(p)
    p.add_argument(
        "--input", "-i", required=True, help='JSON lines {"query", "passage"}; - = stdin'
    )
    p.add_argument(
        "--output",
        "-o",
        default="-",
        help="output JSON lines (default stdout); written to a temporary file renamed when "
        "complete, so it may be the input file itself",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"pairs read, scored and written at a time (default {DEFAULT_CHUNK_SIZE}): memory "
        "stays bounded; pairs are sorted by length within a chunk",
    )
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
    p.add_argument("--output", "-o", default="-", help="output file (default stdout)")
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
