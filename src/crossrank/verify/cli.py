"""``crossrank verify``: compare scorers (crossrank configurations, running services) with a
reference on the user's own data; exit 1 when a given tolerance fails (for CI)."""

from __future__ import annotations

import argparse
import itertools
import logging
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from crossrank.cli_args import UsageError
from crossrank.hub import DEFAULT_MODEL

logger = logging.getLogger(__name__)

#: the default reference: crossrank's exact path (torch, fp32)
EXACT = "exact-fp32=backend:torch,dtype:fp32"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="compare backends or running services with crossrank's exact scores on your data",
        description="Score your queries with a reference (default: crossrank's exact fp32 "
        "path of --model) and one or more candidates (crossrank configurations or running "
        "services), and report how far they agree. Exit code 1 when a tolerance fails.",
        epilog="SPEC: [NAME=]key:value,...  crossrank configuration keys: backend, dtype, "
        "quantize, device, max_length, model (e.g. onnx-int8=backend:onnx,quantize:int8). "
        "Service keys: url, api (tei, cohere-v1, cohere-v2, jina, vllm-score, vllm-rerank, "
        "llamacpp), key or key_env, model, batch, scale (e.g. url:http://127.0.0.1:8080,api:tei).",
    )
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="the checkpoint under test")
    p.add_argument(
        "--candidate",
        "-c",
        action="append",
        default=[],
        metavar="SPEC",
        help="a scorer to compare with the reference (SPEC below); repeatable",
    )
    p.add_argument("--reference", "-r", default=EXACT, metavar="SPEC", help=f"({EXACT})")
    p.add_argument(
        "--device", default=None, help="device of crossrank scorers (default: cuda if available)"
    )
    p.add_argument("--max-length", type=int, default=512, help="of crossrank scorers (512)")
    src = p.add_argument_group("input: JSON lines, or a BEIR dataset and a run")
    src.add_argument(
        "--input", "-i", help='JSON lines: {"query", "documents": [...]} or {"query", "passage"}'
    )
    src.add_argument("--qrels", help="with --input: qrels (BEIR .tsv or TREC) for nDCG@10")
    src.add_argument("--dataset", "-d", help="BEIR dataset directory (with --run)")
    src.add_argument("--split", "-s", default="test", help="qrels split (test)")
    src.add_argument("--run", help="first-stage TREC run of --dataset")
    src.add_argument("--top-k", "-k", type=int, default=100, help="candidates per query (100)")
    src.add_argument("--max-queries", type=int, default=None, help="a sample of N queries")
    src.add_argument("--seed", type=int, default=0, help="seed of the sample (0)")
    p.add_argument(
        "--scale",
        choices=["auto", "logit", "sigmoid"],
        default="auto",
        help="scale of the score differences (auto: logit when both sides answer logits)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight per service (4)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    p.add_argument("--retries", type=int, default=5, help="tries after a 429/503/timeout (5)")
    p.add_argument("--worst", type=int, default=5, help="worst queries kept per candidate (5)")
    p.add_argument("--output", "-o", help="write the report as JSON to this file")
    p.add_argument("--report", help="write a markdown report (and REPORT.png) to this file")
    tol = p.add_argument_group("tolerances (exit code 1 when a candidate fails one)")
    tol.add_argument("--max-abs-diff", type=float, help="largest |difference| allowed")
    tol.add_argument("--max-mean-diff", type=float, help="largest mean |difference| allowed")
    tol.add_argument("--min-spearman", type=float, help="lowest mean per-query Spearman")
    tol.add_argument("--min-kendall", type=float, help="lowest mean per-query Kendall tau")
    tol.add_argument("--min-top1", type=float, help="lowest top-1 agreement (0-1)")
    tol.add_argument("--min-top10", type=float, help="lowest top-10 agreement (0-1)")
    tol.add_argument("--max-top10-changed", type=int, help="most queries whose top 10 changes")
    p.set_defaults(func=cmd_verify)


def _check_args(args: argparse.Namespace) -> None:
    from crossrank.atomic import check_output
    from crossrank.files import check_input

    if not args.candidate:
        raise UsageError("give at least one --candidate SPEC (e.g. -c dtype:bf16)")
    if bool(args.input) == bool(args.dataset):
        raise UsageError("give the queries with --input FILE or with --dataset DIR --run FILE")
    if args.dataset and not args.run:
        raise UsageError("--dataset needs --run (the first-stage TREC run to verify on)")
    if args.input and (args.run or args.max_queries is not None):
        raise UsageError("--run and --max-queries go with --dataset, not --input")
    for name in ("top_k", "concurrency", "max_length", "max_queries"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.timeout <= 0 or args.retries < 0 or args.worst < 0:
        raise UsageError("--timeout must be > 0, --retries and --worst >= 0")
    if args.input:
        check_input(args.input)
    for out in (args.output, args.report):
        if out:
            check_output(out)


def _groups(args: argparse.Namespace):
    """(query groups, qrels or None), read lazily; the first group is read now (bad input
    fails before any model loads)."""
    from crossrank.verify.groups import beir_groups, read_jsonl_groups

    if args.input:
        qrels = None
        if args.qrels:
            from crossrank.eval.beir import read_qrels

            qrels = read_qrels(Path(args.qrels))
        groups: Iterator = read_jsonl_groups(args.input)
    else:
        from crossrank.eval.beir import load_beir, sample_queries
        from crossrank.eval.runs import read_run

        dataset = load_beir(args.dataset, args.split)
        run = read_run(args.run, doc_ids=dataset.corpus)
        pool = [q for q in run if q in dataset.queries]
        if not pool:
            raise UsageError(f"{args.run}: no query of the run is in split {args.split!r}")
        ids = sample_queries(pool, args.max_queries, args.seed)
        qrels = dataset.qrels
        groups = beir_groups(dataset.queries, dataset.corpus, run, ids, args.top_k)
    first = next(groups, None)
    if first is None:
        raise UsageError("no query to verify")
    return itertools.chain([first], groups), qrels


def cmd_verify(args: argparse.Namespace) -> int:
    from crossrank.verify.report import Tolerance, format_console, write_json, write_markdown
    from crossrank.verify.runner import verify
    from crossrank.verify.scorers import build_scorer, parse_spec

    _check_args(args)
    specs = [parse_spec(s) for s in [args.reference, *args.candidate]]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"two scorers are named alike ({', '.join(names)}); name them NAME=...")
    groups, qrels = _groups(args)
    tolerance = Tolerance(
        max_abs_diff=args.max_abs_diff,
        mean_abs_diff=args.max_mean_diff,
        min_spearman=args.min_spearman,
        min_kendall=args.min_kendall,
        min_top1=args.min_top1,
        min_top10=args.min_top10,
        max_top10_changed=args.max_top10_changed,
    )
    common = {"model": args.model, "device": args.device, "max_length": args.max_length}
    scorers = []
    try:
        for spec in specs:
            scorers.append(build_scorer(spec, **common, timeout=args.timeout, retries=args.retries))
        result = verify(
            groups,
            scorers[0],
            scorers[1:],
            scale=args.scale,
            qrels=qrels,
            concurrency=args.concurrency,
            worst=args.worst,
        )
    finally:
        for s in scorers:
            s.close()
    print(format_console(result, tolerance))
    if args.output:
        write_json(result, tolerance, args.output)
    if args.report:
        command = "crossrank " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        write_markdown(result, tolerance, args.report, command=command)
    failed = tolerance.given() and any(tolerance.breaches(c) for c in result.candidates)
    return 1 if failed else 0
