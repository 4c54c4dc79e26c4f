"""``crossrank demo``: the main job, offline, with the bundled model.

Ranks the example documents shipped in the package for the example query (what
``crossrank rank`` prints), then reranks BM25's candidates of a sample of debian-ir dev queries
and prints nDCG@10 and friends of BM25 alone vs BM25 + the bundled reranker, and what the
reranker did to the rank of each query's package. The sample ships in the package
(:data:`crossrank.bundled.DEMO_SAMPLE`: 64 seeded queries, BM25's top 30 of each); ``--dataset``
(or ``$CROSSRANK_DEBIAN_IR``) takes the queries from the whole dataset instead (BM25's top 100).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from pathlib import Path

from crossrank.errors import ModelLoadError

#: dev queries drawn from a whole dataset given with --dataset (the shipped sample: all 64)
DATASET_QUERIES = 64


def find_dataset(explicit: str | None) -> Path | None:
    """The debian-ir directory given (``--dataset`` or ``$CROSSRANK_DEBIAN_IR``), else None:
    the sample shipped in the package."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CROSSRANK_DEBIAN_IR")
    return Path(env) if env else None


def cmd_demo(args: argparse.Namespace) -> int:
    from crossrank.bundled import EXAMPLE_DIR, LANGUAGES, MINILM_DEBIAN, MINILM_DEBIAN_MAX_LENGTH
    from crossrank.hub import BUNDLED_MODEL, DEFAULT_MODEL
    from crossrank.rank_cli import cmd_rank

    if not (MINILM_DEBIAN / "config.json").is_file():
        raise ModelLoadError(f"the bundled model is missing from {MINILM_DEBIAN}")
    query = (EXAMPLE_DIR / "query.txt").read_text(encoding="utf-8").strip()
    model_args = dict(
        model=str(MINILM_DEBIAN),
        device=args.device,
        dtype=None,
        max_length=MINILM_DEBIAN_MAX_LENGTH,
        batch_size=None,
        normalize=False,
    )
    print(
        f"{BUNDLED_MODEL}: the bundled model, small, offline and {LANGUAGES[BUNDLED_MODEL]} "
        f"(for other languages: --model {DEFAULT_MODEL})\n"
    )
    print(f"crossrank rank --model {BUNDLED_MODEL} --query {query!r}")
    print(f"  --documents {EXAMPLE_DIR / 'documents.jsonl'}\n")
    cmd_rank(
        argparse.Namespace(
            **model_args,
            query=query,
            documents=str(EXAMPLE_DIR / "documents.jsonl"),
            top_k=None,
            json=False,
            output="-",
        )
    )
    if args.queries == 0:
        print("\n(--queries 0: no dev-set evaluation)")
        return 0
    return dev_table(find_dataset(args.dataset), args, model_args)


def dev_table(dataset: Path | None, args: argparse.Namespace, model_args: dict) -> int:
    from crossrank.bundled import DEMO_SAMPLE, DEMO_SAMPLE_DEPTH, DEMO_SAMPLE_RUN
    from crossrank.cli_args import load_reranker
    from crossrank.eval.beir import load_beir, sample_queries
    from crossrank.eval.metrics import evaluate
    from crossrank.eval.report import EvalResult, format_console
    from crossrank.eval.reranking import rerank
    from crossrank.eval.runs import read_run

    if dataset is None:
        root, run_path, depth, n = DEMO_SAMPLE, DEMO_SAMPLE_RUN, DEMO_SAMPLE_DEPTH, args.queries
        source = f"the debian-ir sample shipped with crossrank ({DEMO_SAMPLE})"
    else:
        root, run_path, depth = dataset, dataset / "dev.bm25.top100.run", 100
        n, source = args.queries or DATASET_QUERIES, str(dataset)
    ds = load_beir(root, "dev")
    run = read_run(run_path, doc_ids=ds.corpus)
    pool = [q for q, docs in ds.qrels.items() if q in run and any(r > 0 for r in docs.values())]
    qids = sample_queries(pool, n, args.seed)
    run = {q: run[q] for q in qids}
    result = EvalResult(str(root), "dev", f"BM25 ({run_path.name})", depth, evaluate(ds.qrels, run))
    result.sampled, result.seed = (len(qids), len(pool)), args.seed
    reranker = load_reranker(argparse.Namespace(**model_args), show_progress=False)
    print(f"\nreranking BM25's top {depth} of {len(qids)} dev queries of {source}...")
    start = time.perf_counter()
    reranked = rerank(reranker, ds, run, depth, query_ids=qids)
    result.seconds["crossrank/minilm-debian"] = time.perf_counter() - start
    result.models["crossrank/minilm-debian"] = evaluate(ds.qrels, reranked)
    print()
    print(format_console(result))
    print()
    print("\n".join(moves(ds.queries, ds.qrels, run, reranked)))
    print(
        "(a sample: numbers move between samples; docs/training.md has the measurement on all "
        "1000 dev queries)"
    )
    return 0


def first_relevant(docs: Mapping[str, float], judged: Mapping[str, int]) -> int | None:
    """The rank of the best-ranked relevant document of one query's run (None: absent)."""
    from crossrank.eval.runs import ranked

    return next((i for i, (d, _) in enumerate(ranked(docs), 1) if judged.get(d, 0) > 0), None)


def moves(queries, qrels, before, after) -> list[str]:
    """What reranking did to the rank of each query's first relevant document, in lines."""
    ranks = []
    for q in before:
        was, now = first_relevant(before[q], qrels[q]), first_relevant(after[q], qrels[q])
        if was is not None and now is not None:
            ranks.append((q, was, now))
    up = sum(now < was for _, was, now in ranks)
    down = sum(now > was for _, was, now in ranks)
    lines = [
        f"the rank of each query's package after reranking: up for {up} queries, down for "
        f"{down}, unchanged for {len(ranks) - up - down}"
    ]
    if up:
        q, was, now = max(ranks, key=lambda r: (r[1] - r[2], r[0]))
        lines.append(f"  helped most: {queries[q]!r}: rank {was} with BM25 -> {now} reranked")
    if down:
        q, was, now = max(ranks, key=lambda r: (r[2] - r[1], r[0]))
        lines.append(f"  hurt most:   {queries[q]!r}: rank {was} with BM25 -> {now} reranked")
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="rank an example with the bundled model (offline; English only)",
        description="Rank an example, then rerank BM25's candidates of debian-ir dev queries, "
        "with the bundled crossrank/minilm-debian (small, offline, English only).",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="a whole debian-ir directory to draw the dev queries from (default: the 64-query "
        "sample shipped with crossrank)",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=None,
        help=f"dev queries to rerank (default: all 64 of the sample, {DATASET_QUERIES} drawn "
        "from a --dataset; 0 = none)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample (0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=cmd_demo)
