"""Ranked lists from pair scores: the inputs and outputs of every ``rank_many``.

:class:`~crossrank.Reranker` and the Ray path (:mod:`crossrank.distributed.ray_data`) both
flatten (query, documents) into pairs with :func:`rank_pairs`, score them their own way, and
turn the scores back into ranked lists with :func:`ranked_lists`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crossrank.errors import InputError
from crossrank.inputs import Document, as_documents, document_text

__all__ = ["RankResult", "rank_pairs", "ranked_lists"]


@dataclass(frozen=True)
class RankResult:
    """One ranked document: its position in the input, its score, and (optionally) itself."""

    index: int
    score: float
    document: Document | None = None


def rank_pairs(
    queries: Sequence[str], documents: Sequence[Iterable[Document]]
) -> tuple[list[list[Document]], list[tuple[str, str]]]:
    """The checked document lists of ``queries`` and their (query, text) pairs, flattened in
    order (every mistake an :class:`~crossrank.errors.InputError`).

    Example:
        >>> rank_pairs(["q1", "q2"], [["a", {"text": "b"}], ["c"]])[1]
        [('q1', 'a'), ('q1', 'b'), ('q2', 'c')]
    """
    if isinstance(queries, str):
        raise InputError("queries must be a list of strings, got a single string")
    queries = list(queries)
    doc_lists = [as_documents(d, f"documents of query {i}") for i, d in enumerate(documents)]
    if len(queries) != len(doc_lists):
        raise InputError(
            f"{len(queries)} queries but {len(doc_lists)} document lists; they must match"
        )
    pairs: list[tuple[str, str]] = []
    for qi, (query, docs) in enumerate(zip(queries, doc_lists)):
        if not isinstance(query, str):
            raise InputError(f"query {qi} must be a string")
        pairs.extend((query, document_text(d, i)) for i, d in enumerate(docs))
    return doc_lists, pairs


def ranked_lists(
    scores: Sequence[float],
    doc_lists: Sequence[Sequence[Document]],
    *,
    top_k: int | None = None,
    return_documents: bool = False,
) -> list[list[RankResult]]:
    """One list per query, best first (ties keep input order), at most ``top_k`` (a checked
    int or None) each; ``scores`` are those of :func:`rank_pairs`' pairs, in order.

    Example:
        >>> ranked_lists([0.1, 0.9, 0.5], [["a", "b"], ["c"]], top_k=1)
        [[RankResult(index=1, score=0.9, document=None)], [RankResult(index=0, score=0.5, document=None)]]
    """
    results: list[list[RankResult]] = []
    start = 0
    for docs in doc_lists:
        chunk = scores[start : start + len(docs)]
        start += len(docs)
        order = sorted(range(len(chunk)), key=lambda i: (-chunk[i], i))
        if top_k is not None:
            order = order[:top_k]
        results.append(
            [RankResult(i, chunk[i], docs[i] if return_documents else None) for i in order]
        )
    return results
