"""Hard-negative mining: first-stage candidates per query, positives dropped, negatives
sampled reproducibly from a rank range; optional teacher scores for distillation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import InputError, missing_extra
from crossrank.train.deveval import (
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    sample_rank_range,
)

logger = logging.getLogger(__name__)


def bm25_rankings(
    corpus: dict[str, str], queries: dict[str, str], top_k: int
) -> dict[str, list[str]]:
    """BM25 (bm25s, English stemming and stop words) top ``top_k`` document ids per query."""
    try:
        import bm25s
    except ImportError:
        raise missing_extra("eval", "bm25s") from None
    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(
            [corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False
        ),
        show_progress=False,
    )
    qids = list(queries)
    k = min(top_k, len(doc_ids))
    tokens = bm25s.tokenize(
        [queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    results, _ = retriever.retrieve(tokens, k=k, show_progress=False)
    return {q: [doc_ids[int(i)] for i in row] for q, row in zip(qids, results)}


def parse_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--range {text!r}: expected START:END, e.g. 10:100") from None
    if not 0 <= lo < hi:
        raise InputError(f"--range {text!r}: need 0 <= START < END")
    return lo, hi


def mine(
    dataset: str | Path,
    *,
    split: str = "train",
    run: str | Path | None = None,
    rank_range: tuple[int, int] = (10, 100),
    negatives: int = 15,
    seed: int = 42,
    max_queries: int | None = None,
    teacher: Any = None,
) -> list[dict[str, Any]]:
    """Training groups ``{"query", "pos", "neg", ...}`` mined from a first stage.

    ``run`` is a TREC run file; without it BM25 over the corpus is the first stage. Negatives
    come from ranks ``[start, end)`` (0-based) of the first stage, positives (qrels > 0) and
    duplicates removed, ``negatives`` of them drawn with a generator seeded by
    ``(seed, query index)``. ``teacher`` (a Reranker) adds ``pos_scores`` / ``neg_scores``.
    """
    dataset = Path(dataset)
    qrels = read_qrels(dataset, split)
    queries = read_queries(dataset)
    qids = [q for q in sorted(qrels) if any(r > 0 for r in qrels[q].values())]
    missing = [q for q in qids if q not in queries]
    if missing:
        raise InputError(
            f"{len(missing)} qrels queries are not in queries.jsonl, e.g. {missing[0]}"
        )
    if max_queries:
        qids = qids[:max_queries]
    lo, hi = rank_range
    if run is not None:
        ranked = {q: [d for d, _ in docs] for q, docs in read_run(run).items()}
        corpus_keep = {d for q in qids for d in ranked.get(q, [])[lo:hi]}
        corpus_keep |= {d for q in qids for d, r in qrels[q].items() if r > 0}
        corpus = read_corpus(dataset, corpus_keep)
    else:
        corpus = read_corpus(dataset)
        ranked = bm25_rankings(corpus, {q: queries[q] for q in qids}, hi)
    groups, no_run, no_neg, short = [], 0, 0, 0
    for i, q in enumerate(qids):
        pos_ids = [d for d, r in qrels[q].items() if r > 0 and d in corpus]
        if q not in ranked:
            no_run += 1
            continue
        positives = {d for d, r in qrels[q].items() if r > 0}
        seen: set[str] = set()
        window = []
        for d in ranked[q][lo:hi]:
            if d in positives or d in seen or d not in corpus:
                continue
            seen.add(d)
            window.append(d)
        rng = np.random.default_rng([seed, i])
        picks = sample_rank_range(len(window), 0, len(window), negatives, rng)
        neg_ids = [window[j] for j in picks]
        if not neg_ids or not pos_ids:
            no_neg += 1
            continue
        short += len(neg_ids) < negatives
        group = {
            "qid": q,
            "query": queries[q],
            "pos": [corpus[d] for d in pos_ids],
            "neg": [corpus[d] for d in neg_ids],
            "pos_ids": pos_ids,
            "neg_ids": neg_ids,
        }
        groups.append(group)
    if no_run:
        logger.warning("%d queries have no first-stage results and were skipped", no_run)
    if no_neg:
        logger.warning(
            "%d queries have no negative (or positive) in range and were skipped", no_neg
        )
    if short:
        logger.info("%d groups have fewer than %d negatives", short, negatives)
    if teacher is not None and groups:
        pairs = [(g["query"], p) for g in groups for p in g["pos"] + g["neg"]]
        scores = teacher.compute_score(pairs)
        j = 0
        for g in groups:
            n_pos, n_neg = len(g["pos"]), len(g["neg"])
            g["pos_scores"] = scores[j : j + n_pos]
            g["neg_scores"] = scores[j + n_pos : j + n_pos + n_neg]
            j += n_pos + n_neg
    return groups


def write_groups(groups: list[dict[str, Any]], path: str) -> None:
    """Write groups as JSON lines (gzip when the name ends in .gz), atomically."""
    import gzip
    import os

    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(tmp, "wt", encoding="utf-8") as fh:
        for g in groups:
            fh.write(json.dumps(g, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
