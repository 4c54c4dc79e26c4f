"""``crossrank demo``: the main job, offline, with the bundled model.

Ranks the example documents shipped in the package for the example query (what
``crossrank rank`` prints), and, when the debian-ir dataset is found next to the checkout
(``../shared/data/debian-ir``, or ``--dataset``), reranks BM25's top 100 of a sample of dev
queries and prints nDCG@10 and friends of BM25 alone vs BM25 + the bundled reranker.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from crossrank.errors import ModelLoadError

#: where ``make demo`` looks for the debian-ir dataset (first hit wins)
DATASET_CANDIDATES = ("../shared/data/debian-ir", "../../shared/data/debian-ir")


def find_dataset(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("CROSSRANK_DEBIAN_IR")
    for cand in ([env] if env else []) + list(DATASET_CANDIDATES):
        path = Path(cand)
        if (path / "dev.bm25.top100.run").is_file() and (path / "qrels" / "dev.tsv").is_file():
            return path
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    from crossrank.bundled import EXAMPLE_DIR, MINILM_DEBIAN, MINILM_DEBIAN_MAX_LENGTH
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
    print(f"crossrank rank --model crossrank/minilm-debian --query {query!r}")
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
    dataset = find_dataset(args.dataset)
    if dataset is None or args.queries == 0:
        print("\n(debian-ir not found next to the checkout: skipping the dev-set evaluation)")
        return 0
    return dev_table(dataset, args, model_args)


def dev_table(dataset: Path, args: argparse.Namespace, model_args: dict) -> int:
    from crossrank.cli_args import load_reranker
    from crossrank.eval.beir import load_beir, sample_queries
    from crossrank.eval.metrics import evaluate
    from crossrank.eval.report import EvalResult, format_console
    from crossrank.eval.rerank import rerank
    from crossrank.eval.runs import read_run

    ds = load_beir(dataset, "dev")
    run = read_run(dataset / "dev.bm25.top100.run", doc_ids=ds.corpus)
    pool = [q for q, docs in ds.qrels.items() if q in run and any(r > 0 for r in docs.values())]
    qids = sample_queries(pool, args.queries, args.seed)
    run = {q: run[q] for q in qids}
    result = EvalResult(
        str(dataset), "dev", "BM25 (dev.bm25.top100.run)", 100, evaluate(ds.qrels, run)
    )
    result.sampled, result.seed = (len(qids), len(pool)), args.seed
    reranker = load_reranker(argparse.Namespace(**model_args), show_progress=False)
    start = time.perf_counter()
    reranked = rerank(reranker, ds, run, 100, query_ids=qids)
    result.seconds["crossrank/minilm-debian"] = time.perf_counter() - start
    result.models["crossrank/minilm-debian"] = evaluate(ds.qrels, reranked)
    print()
    print(format_console(result))
    print(
        "(a small sample: numbers move a lot between samples; docs/training.md has the "
        "measurement on more queries)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="rank an example with the bundled model (offline)")
    p.add_argument("--dataset", default=None, help="debian-ir directory (default: auto-detect)")
    p.add_argument("--queries", type=int, default=8, help="dev queries to rerank (8; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample (0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=cmd_demo)
