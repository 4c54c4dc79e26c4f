"""Evaluation of rerankers on BEIR-layout datasets (``crossrank eval``).

The public API, reused by other areas (training's dev evaluation and hard-negative mining):

- :func:`load_beir` reads a dataset (corpus, queries, qrels of one split) into a
  :class:`BeirDataset`;
- :func:`read_run` / :func:`write_run` read and write TREC run files;
- :func:`bm25_run` retrieves a first stage with BM25 (cached index);
- :func:`rerank` rescores the top-k candidates of every query with a
  :class:`~crossrank.Reranker` in one batched call;
- :func:`evaluate` computes nDCG@10, RR@10, R@10, R@100 and AP@100 with ir-measures
  (pytrec_eval provider);
- :func:`compare` tests whether one evaluated run differs from another (paired t-test over
  the queries both evaluated), giving a :class:`Comparison`.

A run is ``{query_id: {doc_id: score}}`` (the shape pytrec_eval and ir-measures use); qrels
are ``{query_id: {doc_id: relevance}}``.

Example:
    >>> from crossrank.eval import load_beir, bm25_run, evaluate  # doctest: +SKIP
    >>> ds = load_beir("data/debian-ir", "dev")  # doctest: +SKIP
    >>> run = bm25_run(ds, top_k=100)  # doctest: +SKIP
    >>> evaluate(ds.qrels, run).metrics["nDCG@10"]  # doctest: +SKIP
    0.70...

Importing this package is cheap; the heavy dependencies (bm25s, ir-measures, torch,
matplotlib, scipy) are imported by the functions that need them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MEASURES",
    "BeirDataset",
    "Comparison",
    "Evaluation",
    "bm25_run",
    "compare",
    "evaluate",
    "load_beir",
    "read_run",
    "rerank",
    "sample_queries",
    "top_candidates",
    "write_run",
]

_LAZY = {
    "BeirDataset": "crossrank.eval.beir",
    "load_beir": "crossrank.eval.beir",
    "sample_queries": "crossrank.eval.beir",
    "read_run": "crossrank.eval.runs",
    "write_run": "crossrank.eval.runs",
    "top_candidates": "crossrank.eval.runs",
    "bm25_run": "crossrank.eval.firststage",
    "MEASURES": "crossrank.eval.metrics",
    "Evaluation": "crossrank.eval.metrics",
    "evaluate": "crossrank.eval.metrics",
    "rerank": "crossrank.eval.reranking",
    "Comparison": "crossrank.eval.significance",
    "compare": "crossrank.eval.significance",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossrank.eval' has no attribute {name!r}")
