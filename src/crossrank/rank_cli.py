"""``crossrank score`` (pairs from JSON lines, scores out in input order) and ``crossrank rank``
(documents for one query, best first)."""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any

from crossrank.atomic import check_output, open_output
from crossrank.cli_args import (
    UsageError,
    add_chunk_args,
    add_model_args,
    load_reranker,
    score_options,
)
from crossrank.distributed.cli import add_ray_args, score_with_ray
from crossrank.errors import CrossrankError
from crossrank.files import (
    check_input,
    iter_lines,
    parse_json_object,
    read_jsonl,
    require_str,
)
from crossrank.scoring import DEFAULT_CHUNK_SIZE, log_summary, score_stream

# -- score -------------------------------------------------------------------------------


def cmd_score(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return score_with_ray(args)
    check_input(args.input)
    check_output(args.output, what="--output")
    check_chunk_size(args.chunk_size)
    total, ahead = None, deque[tuple[tuple[str, str], dict[str, Any]]]()
    if args.input == "-":  # not re-readable: the first chunk is checked before the model loads
        rows = read_pairs(args.input)
        ahead.extend(islice(rows, args.chunk_size))
    else:  # the whole file is read (not scored) first: a bad last line costs no scoring
        total = count_pairs(args.input)
        rows = read_pairs(args.input)
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

    start, n = time.perf_counter(), 0
    try:
        with open_output(args.output) as out:
            for score in score_stream(
                reranker,
                pairs(),
                chunk_size=args.chunk_size,
                total=total,  # the bar: on a terminal only (crossrank.progress)
                summary=False,
                **score_options(args),
            ):
                line = json.dumps({**pending.popleft(), "score": score}, ensure_ascii=False)
                out.write(line + "\n")
                n += 1
    except CrossrankError as exc:
        if args.output != "-" or not n:
            raise  # the output file was never renamed into place: nothing half-written
        raise type(exc)(
            f"{exc}; {n} result lines were written to stdout before it: they are not the "
            "whole result"
        ) from None
    # after the output is complete (renamed into place): a failed write is the last line
    where = f" into {args.output}" if args.output != "-" else ""
    log_summary(n, time.perf_counter() - start, args.chunk_size, where)
    return 0


def read_pairs(path: str) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """``((query, passage), row)`` for each JSON line of ``path``, read lazily."""
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        yield (require_str(obj, "query", where), require_str(obj, "passage", where)), obj


def count_pairs(path: str) -> int:
    """The pairs of ``path``, every line parsed and checked (streaming: constant memory);
    the first bad line is an InputError with its number."""
    return sum(1 for _ in read_pairs(path))


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
        ids = [str(docs[r.index].get("id", r.index)) for r in results]
        id_width = max([12, *map(len, ids)])  # as wide as the longest id shown: text aligns
        out.write(f"{'rank':>4}  {'score':>10}  {'id':<{id_width}}  text\n")
        for rank, (r, doc_id) in enumerate(zip(results, ids), 1):
            text = " ".join(docs[r.index]["text"].split())
            text = text if len(text) <= width else text[: width - 1] + "…"
            out.write(f"{rank:>4}  {r.score:>10.4f}  {doc_id:<{id_width}}  {text}\n")
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
