"""Hard-negative mining: first-stage candidates per query, positives dropped, negatives
sampled reproducibly from a rank range; optional teacher scores for distillation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import InputError

logger = logging.getLogger(__name__)


def sample_rank_range(n: int, lo: int, hi: int, k: int, rng: np.random.Generator) -> list[int]:
    """Up to ``k`` distinct indices from ``[lo, min(hi, n))`` in rank order."""
    pool = np.arange(lo, min(hi, n))
    if len(pool) <= k:
        return [int(i) for i in pool]
    return sorted(int(i) for i in rng.choice(pool, size=k, replace=False))


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
    use_cache: bool = True,
) -> list[dict[str, Any]]:
    """Training groups ``{"query", "pos", "neg", ...}`` mined from a first stage.

    ``run`` is a TREC run file; without it BM25 over the corpus (``crossrank.eval``, index
    cached unless ``use_cache`` is False) is the first stage. Negatives
    come from ranks ``[start, end)`` (0-based) of the first stage, positives (qrels > 0) and
    duplicates removed, ``negatives`` of them drawn with a generator seeded by
    ``(seed, query index)``. ``teacher`` (a Reranker) adds ``pos_scores`` / ``neg_scores``.
    """
    from crossrank.eval.beir import load_beir

    ds = load_beir(dataset, split)
    qrels, queries, corpus = ds.qrels, ds.queries, ds.corpus
    qids = [q for q in sorted(qrels) if any(r > 0 for r in qrels[q].values())]
    if max_queries:
        qids = qids[:max_queries]
    lo, hi = rank_range
    if run is not None:
        from crossrank.eval.runs import read_run, top_candidates

        ranked = top_candidates(read_run(run, doc_ids=corpus), hi)
    else:
        from crossrank.eval.firststage import bm25_run, import_bm25s
        from crossrank.eval.runs import top_candidates

        import_bm25s()
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        ranked = top_candidates(bm25_run(ds, hi, query_ids=qids, use_cache=use_cache), hi)
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
    """Write groups as JSON lines (gzip when the name ends in .gz), atomically
    (:func:`crossrank.atomic.atomic_write`)."""
    from crossrank.atomic import atomic_write

    with atomic_write(path, compress=str(path).endswith(".gz")) as fh:
        for g in groups:
            fh.write(json.dumps(g, ensure_ascii=False) + "\n")
