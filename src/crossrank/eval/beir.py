"""Read datasets in BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

- ``corpus.jsonl``: one JSON object per line with ``_id``, ``text`` and optional ``title``;
  a document's text is ``"title text"`` when the title is not empty.
- ``queries.jsonl``: ``_id`` and ``text``.
- ``qrels/<split>.tsv``: a header line, then ``query-id  corpus-id  score`` (tabs or spaces);
  4-column TREC qrels (``qid 0 docid rel``) are read too.

Each file may also be gzip-compressed (``corpus.jsonl.gz``...).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from crossrank.errors import InputError
from crossrank.files import read_jsonl

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    """One split of a BEIR dataset.

    Attributes:
        path: the dataset directory.
        split: the qrels split (``"dev"``, ``"test"``...).
        corpus: document id -> document text (``"title text"``), in file order.
        queries: query id -> text, for the queries of this split's qrels.
        qrels: query id -> {document id -> relevance}.
    """

    path: Path
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels = field(repr=False)

    @property
    def name(self) -> str:
        """The dataset's directory name."""
        return self.path.name

    def __repr__(self) -> str:
        return (
            f"BeirDataset({str(self.path)!r}, split={self.split!r}, documents={len(self.corpus)}, "
            f"queries={len(self.queries)})"
        )


def find_file(directory: Path, name: str) -> Path:
    """``directory/name`` or ``directory/name.gz``, whichever exists (InputError if neither)."""
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise InputError(f"{directory}: no {name} (or {name}.gz); is this a BEIR dataset directory?")


def document_text(title: str | None, text: str) -> str:
    """The text a reranker sees: ``"title text"`` when there is a title, else ``text``."""
    title = (title or "").strip()
    return f"{title} {text}" if title else text


def read_corpus(path: Path) -> dict[str, str]:
    """Document id -> ``"title text"`` from a BEIR ``corpus.jsonl[.gz]``."""
    corpus: dict[str, str] = {}
    for lineno, obj in read_jsonl(str(path)):
        where = f"{path}:{lineno}"
        doc_id = _str_field(obj, "_id", where, allow_int=True)
        text = obj.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where}: missing string field 'text'")
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise InputError(f"{where}: 'title' must be a string")
        if doc_id in corpus:
            raise InputError(f"{where}: duplicate document id {doc_id!r}")
        corpus[doc_id] = document_text(title, text)
    return corpus


def read_queries(path: Path, keep: Iterable[str] | None = None) -> dict[str, str]:
    """Query id -> text from a BEIR ``queries.jsonl[.gz]`` (only the ids in ``keep`` if given)."""
    wanted = set(keep) if keep is not None else None
    queries: dict[str, str] = {}
    for lineno, obj in read_jsonl(str(path)):
        where = f"{path}:{lineno}"
        qid = _str_field(obj, "_id", where, allow_int=True)
        if wanted is not None and qid not in wanted:
            continue
        queries[qid] = _str_field(obj, "text", where)
    return queries


def read_qrels(path: Path) -> Qrels:
    """Query id -> {document id -> relevance} from a BEIR qrels TSV (header line optional)."""
    from crossrank.files import iter_lines

    qrels: Qrels = {}
    for lineno, line in iter_lines(str(path)):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 3:
            qid, doc_id, rel = fields
        elif len(fields) == 4:  # TREC qrels: qid iteration docid rel
            qid, _, doc_id, rel = fields
        else:
            raise InputError(
                f"{path}:{lineno}: expected 'query-id corpus-id score', got {len(fields)} fields"
            )
        value = relevance(rel)
        if value is None:
            if lineno == 1:  # the header line
                continue
            raise InputError(
                f"{path}:{lineno}: relevance {rel!r} is not an integer grade (0, 1, 2...)"
            )
        qrels.setdefault(qid, {})[doc_id] = value
    return qrels


def relevance(text: str) -> int | None:
    """A relevance grade: an integer, or a float with an integral value (``"1.0"``); None for
    anything else (``"inf"``, ``"nan"``, ``"0.5"``, words)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def load_beir(directory: str | Path, split: str) -> BeirDataset:
    """Load the corpus, the queries of ``split`` and its qrels from a BEIR dataset directory.

    Raises :class:`~crossrank.errors.InputError` when the directory, a file or the split is
    missing, when a file is malformed (with its line number), when the corpus or the qrels are
    empty, or when the qrels name a query missing from ``queries.jsonl``.

    Example:
        >>> ds = load_beir("data/scifact", "test")  # doctest: +SKIP
        >>> ds.corpus["4983"][:40], len(ds.queries)  # doctest: +SKIP
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{directory}: no such dataset directory")
    qrels_path = _qrels_path(root, split)
    corpus_path = find_file(root, "corpus.jsonl")
    queries_path = find_file(root, "queries.jsonl")
    qrels = read_qrels(qrels_path)
    if not qrels:
        raise InputError(f"{qrels_path}: no relevance judgments")
    corpus = read_corpus(corpus_path)
    if not corpus:
        raise InputError(f"{corpus_path}: the corpus is empty")
    queries = read_queries(queries_path, keep=qrels)
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InputError(
            f"{qrels_path}: {len(missing)} query ids are not in {queries_path.name} "
            f"(first: {missing[0]!r})"
        )
    unknown_docs = sum(1 for docs in qrels.values() for d in docs if d not in corpus)
    if unknown_docs:
        logger.warning(
            "%s: %d judgments name documents not in the corpus", qrels_path, unknown_docs
        )
    queries = {qid: queries[qid] for qid in qrels}  # qrels order
    logger.info(
        "loaded %s split %s: %d documents, %d queries", root, split, len(corpus), len(queries)
    )
    return BeirDataset(root, split, corpus, queries, qrels)


def sample_queries(query_ids: Iterable[str], n: int | None, seed: int = 0) -> list[str]:
    """``n`` query ids drawn reproducibly with ``seed`` (all of them, sorted, when ``n`` is None).

    The draw depends only on the set of ids, ``n`` and ``seed``: the same sample every time.
    """
    ids = sorted(set(query_ids))
    if n is None or n >= len(ids):
        return ids
    if n < 1:
        raise InputError(f"the number of queries to sample must be positive, got {n}")
    return sorted(random.Random(seed).sample(ids, n))


def _qrels_path(root: Path, split: str) -> Path:
    qdir = root / "qrels"
    for name in (f"{split}.tsv", f"{split}.tsv.gz"):
        if (qdir / name).is_file():
            return qdir / name
    available = (
        sorted(p.name.split(".")[0] for p in qdir.glob("*.tsv*") if p.is_file())
        if qdir.is_dir()
        else []
    )
    hint = f"; available: {', '.join(available)}" if available else ""
    raise InputError(f"{root}: no qrels for split {split!r} (qrels/{split}.tsv){hint}")


def _str_field(obj: dict, name: str, where: str, *, allow_int: bool = False) -> str:
    value = obj.get(name)
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"{where}: missing string field {name!r}")
    return value
