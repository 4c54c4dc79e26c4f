"""What ``crossrank verify`` scores: query groups (one query and its candidates), read lazily.

Two inputs:

- JSON lines, read one line at a time (:func:`read_jsonl_groups`): either one object per
  query, ``{"query": ..., "documents": [str | {"text", "id"?}], "query_id"?}`` (``candidates``
  is accepted for ``documents``), or one object per pair, ``{"query", "passage", "query_id"?,
  "doc_id"?}`` (``crossrank score``'s input), where consecutive lines with the same query (or
  ``query_id``) form one group. Only one group is held at a time.
- A BEIR dataset and a first-stage run, as ``crossrank eval`` takes them
  (:func:`beir_groups`): the top-k documents of each query, one query at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from crossrank.errors import InputError


@dataclass(frozen=True)
class QueryGroup:
    """One query and the candidates to score with it.

    Attributes:
        qid: the query's id (``query_id`` when given, else its position: ``"q1"``, ...).
        query: the query text.
        doc_ids: one id per candidate (``doc_id`` / ``id`` when given, else ``"0"``, ``"1"``...).
        texts: the candidates' texts.
        where: where the group starts (``file:line``), for messages.
    """

    qid: str
    query: str
    doc_ids: tuple[str, ...]
    texts: tuple[str, ...]
    where: str = ""


def _text_of(doc: Any, where: str, i: int) -> tuple[str | None, str]:
    if isinstance(doc, str):
        return None, doc
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        doc_id = doc.get("id", doc.get("doc_id"))
        return (None if doc_id is None else str(doc_id)), doc["text"]
    raise InputError(f"{where}: document {i} must be a string or an object with a string 'text'")


def _one_object(obj: dict[str, Any], where: str, number: int) -> QueryGroup:
    from crossrank.files import require_str

    query = require_str(obj, "query", where)
    docs = obj.get("documents", obj.get("candidates"))
    if not isinstance(docs, list) or not docs:
        raise InputError(f"{where}: 'documents' must be a non-empty list")
    ids, texts = [], []
    for i, doc in enumerate(docs):
        doc_id, text = _text_of(doc, where, i)
        ids.append(str(i) if doc_id is None else doc_id)
        texts.append(text)
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: two documents have the same id")
    qid = obj.get("query_id")
    return QueryGroup(
        f"q{number}" if qid is None else str(qid), query, tuple(ids), tuple(texts), where
    )


def read_jsonl_groups(path: str) -> Iterator[QueryGroup]:
    """Query groups from a JSON-lines file (``.gz`` and ``-`` too), read lazily.

    Raises:
        InputError: a missing or unreadable file, invalid JSON, a missing field (with the
            file and line), a file with no line at all.

    Example:
        >>> for g in read_jsonl_groups("pairs.jsonl"):  # doctest: +SKIP
        ...     print(g.qid, len(g.texts))
    """
    from crossrank.files import read_jsonl, require_str

    current: dict[str, Any] | None = None
    number = 0
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        if "passage" not in obj:  # one object per query
            if current is not None:
                yield _finish(current)
                current = None
            number += 1
            yield _one_object(obj, where, number)
            continue
        query, passage = require_str(obj, "query", where), require_str(obj, "passage", where)
        key = obj.get("query_id", query)
        if current is None or current["key"] != key:
            if current is not None:
                yield _finish(current)
            number += 1
            qid = obj.get("query_id")
            current = {
                "key": key,
                "qid": f"q{number}" if qid is None else str(qid),
                "query": query,
                "ids": [],
                "texts": [],
                "where": where,
            }
        doc_id = obj.get("doc_id")
        current["ids"].append(str(len(current["ids"])) if doc_id is None else str(doc_id))
        current["texts"].append(passage)
    if current is not None:
        yield _finish(current)
    elif number == 0:
        raise InputError(f"{path}: no query in the file")


def _finish(current: dict[str, Any]) -> QueryGroup:
    ids = current["ids"]
    if len(set(ids)) != len(ids):
        raise InputError(
            f"{current['where']}: a doc_id is listed twice for query {current['qid']!r}"
        )
    return QueryGroup(
        current["qid"], current["query"], tuple(ids), tuple(current["texts"]), current["where"]
    )


def beir_groups(
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    run: Mapping[str, Mapping[str, float]],
    query_ids: Iterable[str],
    top_k: int,
) -> Iterator[QueryGroup]:
    """The top-``top_k`` documents of each query of ``query_ids`` in ``run`` (trec_eval's
    order), one group at a time; queries the run does not mention are skipped."""
    from crossrank.eval.runs import ranked

    for qid in query_ids:
        docs = run.get(qid)
        if not docs or qid not in queries:
            continue
        ids = tuple(d for d, _ in ranked(docs)[:top_k])
        yield QueryGroup(qid, queries[qid], ids, tuple(corpus[d] for d in ids), f"query {qid}")
