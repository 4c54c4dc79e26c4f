"""TREC run files: ``qid Q0 docid rank score tag``, one retrieved document per line.

In memory a run is ``{query_id: {doc_id: score}}``, the shape pytrec_eval and ir-measures
take. Like trec_eval, the order of a query's documents is by score (descending), ties broken
by document id (descending); the rank column is informative only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path

from crossrank.errors import InputError

Run = dict[str, dict[str, float]]


def read_run(path: str | Path, doc_ids: Collection[str] | None = None) -> Run:
    """Read a TREC run file (``.gz`` too).

    With ``doc_ids`` (e.g. ``dataset.corpus``), a document id outside it is an
    :class:`~crossrank.errors.InputError` naming the line; so are malformed lines, a
    non-numeric score, a document listed twice for one query, and an empty file.

    Example:
        >>> run = read_run("dev.bm25.top100.run", doc_ids=ds.corpus)  # doctest: +SKIP
        >>> run["q1"]["d7"]  # doctest: +SKIP
        9.4435
    """
    from crossrank.files import iter_lines

    run: Run = {}
    for lineno, line in iter_lines(str(path)):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 6:
            raise InputError(
                f"{where}: expected 'qid Q0 docid rank score tag', got {len(fields)} fields"
            )
        qid, _, doc_id, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise InputError(f"{where}: score {score!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{where}: score {score!r} is not a finite number")
        if doc_ids is not None and doc_id not in doc_ids:
            raise InputError(f"{where}: document {doc_id!r} is not in the corpus")
        docs = run.setdefault(qid, {})
        if doc_id in docs:
            raise InputError(f"{where}: document {doc_id!r} listed twice for query {qid!r}")
        docs[doc_id] = value
    if not run:
        raise InputError(f"{path}: the run is empty")
    return run


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """A query's ``(doc_id, score)`` pairs in trec_eval's order: score desc, then doc id desc."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def top_candidates(run: Mapping[str, Mapping[str, float]], k: int) -> dict[str, list[str]]:
    """The ``k`` best document ids of each query, best first (the order metrics see)."""
    if k < 1:
        raise InputError(f"top_k must be positive, got {k}")
    return {qid: [d for d, _ in ranked(docs)[:k]] for qid, docs in run.items()}


def write_run(
    run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "crossrank"
) -> None:
    """Write ``run`` as a TREC run file (queries in run order, documents best first).

    The file is written atomically (:func:`crossrank.atomic.atomic_write`): a reader never
    sees half a run.
    Tags with whitespace are joined with ``_``.

    Example:
        >>> write_run({"q1": {"d1": 2.5, "d2": 1.0}}, "out.run", tag="bm25")  # doctest: +SKIP
    """
    from crossrank.atomic import atomic_write

    tag = "_".join(tag.split()) or "crossrank"
    with atomic_write(path) as out:
        for qid, docs in run.items():
            for rank, (doc_id, score) in enumerate(ranked(docs), 1):
                out.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")
