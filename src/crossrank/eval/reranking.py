"""Rerank a first-stage run: rescore each query's top-k with a cross-encoder and reorder."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from crossrank.errors import InputError
from crossrank.eval.runs import Run, ranked

logger = logging.getLogger(__name__)


def rerank(
    reranker: Any,
    dataset: Any,
    run: Mapping[str, Mapping[str, float]],
    top_k: int = 100,
    *,
    query_ids: Iterable[str] | None = None,
    keep_tail: bool = True,
    **score_options: Any,
) -> Run:
    """The run with each query's ``top_k`` first-stage documents rescored and reordered.

    All (query, document) pairs of all queries go to the model in ONE batched call
    (``reranker.rank_many``), so the engine sorts them by length across queries; its progress
    bar follows the reranker's ``show_progress`` (on by default from 1024 pairs).

    The reranked documents carry the model's scores. With ``keep_tail`` the first-stage
    documents below ``top_k`` follow them, in first-stage order, with scores below the lowest
    model score (``lowest - 1``, ``lowest - 2``...), so recall at depths past ``top_k`` is that
    of the first stage. Queries of ``run`` missing from ``dataset.queries`` are an error; with
    ``query_ids`` only those queries are reranked (and returned).

    Args:
        reranker: a :class:`~crossrank.Reranker` (anything with ``rank_many``).
        dataset: a :class:`~crossrank.eval.beir.BeirDataset` (its ``queries`` and ``corpus``
            give the texts).
        run: first-stage run ``{query_id: {doc_id: score}}``.
        top_k: how many first-stage documents of each query to rescore.
        score_options: passed to ``rank_many`` (``max_chunks_per_doc=``, ...).

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-m3")  # doctest: +SKIP
        >>> reranked = rerank(rr, ds, bm25_run(ds, 100), top_k=100)  # doctest: +SKIP
        >>> evaluate(ds.qrels, reranked)["nDCG@10"]  # doctest: +SKIP
    """
    if top_k < 1:
        raise InputError(f"top_k must be positive, got {top_k}")
    qids = list(run) if query_ids is None else [q for q in query_ids if q in run]
    queries: list[str] = []
    candidates: list[list[str]] = []
    tails: list[list[str]] = []
    for qid in qids:
        text = dataset.queries.get(qid)
        if text is None:
            raise InputError(f"query {qid!r} of the run is not in the dataset's queries")
        order = [d for d, _ in ranked(run[qid])]
        for doc_id in order[:top_k]:
            if doc_id not in dataset.corpus:
                raise InputError(f"document {doc_id!r} of query {qid!r} is not in the corpus")
        queries.append(text)
        candidates.append(order[:top_k])
        tails.append(order[top_k:] if keep_tail else [])
    n_pairs = sum(len(c) for c in candidates)
    logger.info("reranking %d pairs of %d queries", n_pairs, len(qids))
    documents = [[dataset.corpus[d] for d in cands] for cands in candidates]
    results = (
        reranker.rank_many(queries, documents, **score_options) if n_pairs else [[] for _ in qids]
    )
    out: Run = {}
    for qid, cands, tail, ranking in zip(qids, candidates, tails, results):
        scored = {cands[r.index]: float(r.score) for r in ranking}
        lowest = min(scored.values(), default=0.0)
        for j, doc_id in enumerate(tail, 1):
            scored[doc_id] = lowest - j
        out[qid] = scored
    return out
