"""``crossrank eval``: rerank a first stage on a BEIR dataset and report IR metrics."""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import shlex
import sys
import time
from pathlib import Path

from crossrank.cli_args import (
    UsageError,
    add_chunk_args,
    add_model_args,
    load_reranker,
    score_options,
)
from crossrank.distributed.cli import add_ray_args

logger = logging.getLogger(__name__)

#: the first stage retrieves at least this deep, so R@100 and AP@100 are meaningful
MIN_FIRST_STAGE_DEPTH = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="rerank a first stage on a BEIR-layout dataset and report nDCG@10, MRR, recall, MAP",
        description="Rerank the top-k of a first stage (a TREC run or built-in BM25) on a "
        "BEIR-layout dataset with one or more models; report first stage vs reranked metrics.",
    )
    add_model_args(p, multiple=True)
    add_chunk_args(p)
    p.add_argument("--dataset", "-d", required=True, help="BEIR dataset directory")
    p.add_argument("--split", "-s", default="test", help="qrels split (qrels/SPLIT.tsv; test)")
    first = p.add_mutually_exclusive_group()
    first.add_argument("--run", help="first-stage TREC run file (qid Q0 docid rank score tag)")
    first.add_argument(
        "--first-stage",
        choices=["bm25"],
        default=None,
        help="built-in first stage when no --run is given (default bm25)",
    )
    p.add_argument("--top-k", "-k", type=int, default=100, help="candidates reranked (100)")
    p.add_argument("--max-queries", type=int, default=None, help="evaluate a sample of N queries")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-queries sample (0)")
    p.add_argument("--output", "-o", help="write the metrics as JSON to this file")
    p.add_argument("--report", help="write a markdown report (and REPORT.png) to this file")
    p.add_argument(
        "--save-run",
        help="write the reranked run (TREC) to this file; with several models, "
        "FILE gets the model's name before its suffix",
    )
    p.add_argument("--save-first-stage", help="write the first-stage run (TREC) to this file")
    p.add_argument("--bm25-k1", type=float, default=0.9, help="BM25 k1 (0.9, as Pyserini)")
    p.add_argument("--bm25-b", type=float, default=0.4, help="BM25 b (0.4, as Pyserini)")
    p.add_argument(
        "--cache-dir", help="BM25 index cache (default: $CROSSRANK_CACHE, the dataset, ~/.cache)"
    )
    add_ray_args(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from crossrank.eval.beir import load_beir, sample_queries
    from crossrank.eval.metrics import evaluate
    from crossrank.eval.report import EvalResult, format_console, write_json, write_markdown
    from crossrank.eval.runs import write_run

    _check_args(args)
    dataset = load_beir(args.dataset, args.split)
    judged = [q for q, docs in dataset.qrels.items() if any(r > 0 for r in docs.values())]
    if not judged:
        raise UsageError(f"split {args.split!r} has no query with a relevant document")

    if args.run:
        from crossrank.eval.runs import read_run

        run = read_run(args.run, doc_ids=dataset.corpus)
        first_name = f"run {args.run}"
        pool = [q for q in judged if q in run]
        if not pool:
            raise UsageError(f"{args.run}: no query of the run is judged in split {args.split!r}")
        if args.max_queries is not None:
            run = {q: run[q] for q in sample_queries(pool, args.max_queries, args.seed)}
    else:
        from crossrank.eval.firststage import bm25_run, import_bm25s

        import_bm25s()
        if args.verbose < 2:  # bm25s sets its logger to DEBUG when imported
            logging.getLogger("bm25s").setLevel(logging.WARNING)
        depth = max(args.top_k, MIN_FIRST_STAGE_DEPTH)
        pool = judged
        ids = (
            sample_queries(pool, args.max_queries, args.seed)
            if args.max_queries is not None
            else list(dataset.queries)
        )
        run = bm25_run(
            dataset, depth, query_ids=ids, cache_dir=args.cache_dir, k1=args.bm25_k1, b=args.bm25_b
        )
        first_name = f"BM25 (k1={args.bm25_k1:g}, b={args.bm25_b:g}) top {depth}"
    if args.save_first_stage:
        write_run(run, args.save_first_stage, tag="bm25" if not args.run else "first_stage")

    first_eval = evaluate(dataset.qrels, run)
    if first_eval.queries == 0:
        raise UsageError("no query of the first stage has a relevant document in the qrels")
    result = EvalResult(str(args.dataset), args.split, first_name, args.top_k, first_eval)
    if args.max_queries is not None and args.max_queries < len(pool):
        result.sampled, result.seed = (args.max_queries, len(pool)), args.seed
    evaluated = list(first_eval.per_query)
    for i, model in enumerate(args.model):
        reranked, seconds = _rerank_with(args, model, dataset, run, evaluated)
        result.models[model] = evaluate(dataset.qrels, reranked)
        result.seconds[model] = seconds
        if args.save_run:
            write_run(
                reranked, _run_path(args.save_run, model, i, len(args.model)), tag=_slug(model)
            )

    print(format_console(result))
    if args.output:
        write_json(result, args.output)
    if args.report:
        command = "crossrank " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        write_markdown(result, args.report, command=command)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    if args.bm25_k1 < 0 or not 0 <= args.bm25_b <= 1:
        raise UsageError("--bm25-k1 must be >= 0 and --bm25-b between 0 and 1")
    if args.max_queries is not None and args.max_queries < 1:
        raise UsageError("--max-queries must be >= 1")
    if len(set(args.model)) != len(args.model):
        raise UsageError("a --model is given twice")
    if args.save_run and not args.model:
        raise UsageError("--save-run needs at least one --model")
    if args.run and not Path(args.run).is_file():
        raise UsageError(f"{args.run}: no such run file")
    from crossrank.models.adapters import check_model_argument

    for model in args.model:  # fail before the first stage, not after it (adapters too)
        check_model_argument(model)
    from crossrank.atomic import check_output

    for option, path in (
        ("--output", args.output),
        ("--report", args.report),
        ("--save-run", args.save_run),
        ("--save-first-stage", args.save_first_stage),
    ):
        if path:
            check_output(path, what=option)


def _rerank_with(args, model, dataset, run, query_ids):
    from crossrank.eval.reranking import rerank

    if args.engine == "ray":  # the same rerank, scored by Ray Data actors
        from crossrank.distributed.cli import ray_reranker, ray_session

        session, make = ray_session(args), lambda: ray_reranker(args, model)
    else:
        session = contextlib.nullcontext()

        def make():  # its progress bar: on a terminal only (crossrank.progress)
            return load_reranker(args, model=model)

    with session:
        reranker = make()
        start = time.perf_counter()
        reranked = rerank(
            reranker, dataset, run, args.top_k, query_ids=query_ids, **score_options(args)
        )
        seconds = time.perf_counter() - start
    n_pairs = sum(min(len(run[q]), args.top_k) for q in query_ids)
    logger.info("%s: %d pairs in %.1f s", model, n_pairs, seconds)
    return reranked, seconds


def _slug(model: str) -> str:
    name = model.rstrip("/").replace("\\", "/")
    parts = [p for p in name.split("/") if p]
    base = "_".join(parts[-2:]) if len(parts) > 1 and not Path(model).exists() else parts[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base) or "model"


def _run_path(base: str, model: str, index: int, count: int) -> Path:
    path = Path(base)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}.{index + 1}-{_slug(model)}{path.suffix}")
