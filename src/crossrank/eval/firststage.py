"""Built-in first stage: BM25 over the corpus with ``bm25s`` and English (Snowball) stemming.

The index is cached on disk under a key that hashes the corpus content (ids and texts), the
BM25 parameters and the tokenization, so a changed corpus gets a fresh index and an unchanged
one is loaded in a fraction of the build time. The cache directory is, in order:

1. the ``cache_dir`` argument;
2. ``$CROSSRANK_CACHE/bm25`` when the variable is set;
3. ``<dataset>/.crossrank_cache/bm25`` when the dataset directory is writable;
4. ``~/.cache/crossrank/bm25``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import InputError, missing_extra
from crossrank.hub import cache_dir

logger = logging.getLogger(__name__)

#: bump when the on-disk layout or the tokenization changes
CACHE_VERSION = 1
STOPWORDS = "en"
STEMMER = "english"


def import_bm25s() -> tuple[Any, Any]:
    try:
        import bm25s
    except ImportError:
        raise missing_extra("eval", "bm25s") from None
    try:
        import Stemmer
    except ImportError:
        raise missing_extra("eval", "PyStemmer") from None
    return bm25s, Stemmer


def corpus_key(corpus: Mapping[str, str], k1: float, b: float, method: str) -> str:
    """Hex digest identifying an index: corpus content, BM25 parameters and tokenization."""
    bm25s, _ = import_bm25s()
    h = hashlib.sha256()
    settings = {
        "v": CACHE_VERSION,
        "k1": k1,
        "b": b,
        "method": method,
        "stopwords": STOPWORDS,
        "stemmer": STEMMER,
        "bm25s": getattr(bm25s, "__version__", "?"),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    for doc_id, text in corpus.items():
        h.update(doc_id.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return h.hexdigest()[:32]


def default_cache_dir(dataset_dir: str | Path | None = None) -> Path:
    """Where BM25 indexes are cached (see the module docstring for the order)."""
    if os.environ.get("CROSSRANK_CACHE"):
        return cache_dir("bm25")
    if dataset_dir is not None:
        root = Path(dataset_dir)
        cache = root / ".crossrank_cache"
        if cache.is_dir() and os.access(cache, os.W_OK):
            return cache / "bm25"
        if root.is_dir() and os.access(root, os.W_OK) and not cache.exists():
            return cache / "bm25"
    return cache_dir("bm25")


@dataclass
class BM25Index:
    """A BM25 index over a corpus; ``doc_ids[i]`` is the id of the index's document ``i``.

    Attributes:
        retriever: the ``bm25s.BM25`` object.
        doc_ids: document ids in index order.
        path: the cache directory of this index (None when not cached).
        from_cache: whether it was loaded from the cache rather than built.
        build_seconds: time spent building (0 when loaded).
    """

    retriever: Any
    doc_ids: list[str]
    path: Path | None = None
    from_cache: bool = False
    build_seconds: float = 0.0

    @classmethod
    def build(
        cls, corpus: Mapping[str, str], *, k1: float = 0.9, b: float = 0.4, method: str = "lucene"
    ) -> BM25Index:
        """Tokenize (lowercase, English stopwords, Snowball stemming) and index ``corpus``."""
        if not corpus:
            raise InputError("cannot build a BM25 index over an empty corpus")
        bm25s, Stemmer = import_bm25s()
        start = time.perf_counter()
        doc_ids = list(corpus)
        tokens = bm25s.tokenize(
            [corpus[d] for d in doc_ids],
            stopwords=STOPWORDS,
            stemmer=Stemmer.Stemmer(STEMMER),
            show_progress=False,
        )
        retriever = bm25s.BM25(k1=k1, b=b, method=method)
        retriever.index(tokens, show_progress=False)
        seconds = time.perf_counter() - start
        logger.info("built a BM25 index of %d documents in %.1f s", len(doc_ids), seconds)
        return cls(retriever, doc_ids, build_seconds=seconds)

    @classmethod
    def load_or_build(
        cls,
        corpus: Mapping[str, str],
        *,
        cache_dir: str | Path | None = None,
        dataset_dir: str | Path | None = None,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        use_cache: bool = True,
    ) -> BM25Index:
        """The cached index of ``corpus`` if there is one, else a new one (then cached)."""
        if not use_cache:
            return cls.build(corpus, k1=k1, b=b, method=method)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir(dataset_dir)
        path = root / corpus_key(corpus, k1, b, method)
        if (path / "ids.json").is_file():
            try:
                return cls._load(path)
            except Exception as exc:  # a damaged cache entry is rebuilt, never fatal
                logger.warning("ignoring the unreadable BM25 cache %s (%s)", path, exc)
        index = cls.build(corpus, k1=k1, b=b, method=method)
        try:
            index._save(path)
        except OSError as exc:
            logger.warning("could not cache the BM25 index in %s (%s)", root, exc)
        return index

    @classmethod
    def _load(cls, path: Path) -> BM25Index:
        bm25s, _ = import_bm25s()
        retriever = bm25s.BM25.load(str(path), show_progress=False)
        doc_ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
        logger.info("loaded the BM25 index from %s", path)
        return cls(retriever, doc_ids, path=path, from_cache=True)

    def _save(self, path: Path) -> None:
        from crossrank.atomic import atomic_dir

        def fill(tmp: Path) -> None:
            self.retriever.save(str(tmp), show_progress=False)
            (tmp / "ids.json").write_text(json.dumps(self.doc_ids), encoding="utf-8")

        atomic_dir(path, fill)  # readers see a whole index or none
        self.path = path
        logger.info("cached the BM25 index in %s", path)

    def search(
        self, queries: Mapping[str, str], top_k: int = 100, *, show_progress: bool = False
    ) -> dict[str, dict[str, float]]:
        """The ``top_k`` documents of each query with their BM25 scores.

        Documents matching no query term are left out, so a query may get fewer than
        ``top_k`` documents, or none (it is still in the run, with no documents).
        """
        if top_k < 1:
            raise InputError(f"top_k must be positive, got {top_k}")
        bm25s, Stemmer = import_bm25s()
        qids = list(queries)
        tokens = bm25s.tokenize(
            [queries[q] for q in qids],
            stopwords=STOPWORDS,
            stemmer=Stemmer.Stemmer(STEMMER),
            return_ids=False,
            show_progress=False,
        )
        vocab = self.retriever.vocab_dict
        run: dict[str, dict[str, float]] = {q: {} for q in qids}
        known = [(q, [t for t in toks if t in vocab]) for q, toks in zip(qids, tokens)]
        known = [(q, toks) for q, toks in known if toks]
        if not known:
            return run
        k = min(top_k, len(self.doc_ids))
        docs, scores = self.retriever.retrieve(
            [toks for _, toks in known], k=k, show_progress=show_progress
        )
        for (qid, _), row_docs, row_scores in zip(known, docs, scores):
            run[qid] = {
                self.doc_ids[int(i)]: float(s) for i, s in zip(row_docs, row_scores) if s > 0
            }
        return run


def bm25_run(
    dataset: Any,
    top_k: int = 100,
    *,
    query_ids: Iterable[str] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    k1: float = 0.9,
    b: float = 0.4,
    show_progress: bool = False,
) -> dict[str, dict[str, float]]:
    """A BM25 first-stage run over a :class:`~crossrank.eval.beir.BeirDataset`.

    Retrieves ``top_k`` documents for each query of the split (or of ``query_ids``). The
    index (Lucene-style BM25, ``k1=0.9, b=0.4`` as in Pyserini, English stopwords and
    Snowball stemming) is cached on disk; see the module docstring for where.

    Example:
        >>> run = bm25_run(load_beir("data/debian-ir", "dev"), top_k=100)  # doctest: +SKIP
        >>> evaluate(ds.qrels, run)["nDCG@10"]  # doctest: +SKIP
    """
    index = BM25Index.load_or_build(
        dataset.corpus,
        cache_dir=cache_dir,
        dataset_dir=dataset.path,
        k1=k1,
        b=b,
        use_cache=use_cache,
    )
    ids = list(dataset.queries) if query_ids is None else list(query_ids)
    unknown = [q for q in ids if q not in dataset.queries]
    if unknown:
        raise InputError(f"{len(unknown)} query ids are not in the dataset (first: {unknown[0]!r})")
    return index.search({q: dataset.queries[q] for q in ids}, top_k, show_progress=show_progress)
