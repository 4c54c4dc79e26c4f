"""Long documents: truncation, or overlapping chunks scored separately ("max-p").

By default a document is cut on the passage side to fit the model (each family's own rule, so
the scores equal plain :meth:`~crossrank.Reranker.compute_score`). With chunking, a document
longer than the passage budget is split into windows of that budget that share ``chunk_overlap``
tokens, each window is scored with the query, and the document's score is its best window's.
How is one option object, :class:`~crossrank.options.ChunkSpec` (declared with the Reranker's
options).
The first window is exactly the truncated document, so chunking never lowers a score.

Only the :class:`~crossrank.engine.encoding.PairEncoding` seam is used, so chunking works for
every family; LLM windows keep their ``prefix_len``, so one query's prefix is shared by all
chunks of all its documents. The library (``compute_score`` / ``rank`` with
``chunking=`` / ``max_chunks_per_doc``), the CLI and the server all go through :func:`encode_chunked`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.tokenize import EncodedPair, encode_distinct
from crossrank.errors import InputError
from crossrank.options import ChunkSpec

__all__ = ["ChunkSpec", "EncodedRequest", "TooLongError", "encode_chunked", "encode_request"]


class TooLongError(InputError):
    """A pair exceeds the model's length and the request asked not to truncate."""


@dataclass
class EncodedRequest:
    """The pairs of one request: ``doc_of[i]`` is the document of ``pairs[i]``."""

    pairs: list[EncodedPair]
    doc_of: np.ndarray
    n_docs: int

    @property
    def n_tokens(self) -> int:
        return sum(len(p) for p in self.pairs)


def _cut(enc: Encoding, n: int, direction: str = "right") -> Encoding:
    """A copy of ``enc`` keeping ``n`` tokens from its start (right) or its end (left)."""
    copy = Encoding.merge([enc], growing_offsets=False)
    copy.truncate(n, direction=direction)
    return copy


def windows(p: Encoding, budget: int, spec: ChunkSpec) -> list[Encoding]:
    """The passage windows of one document under a passage budget of ``budget`` tokens."""
    if spec.max_tokens_per_doc is not None and len(p) > spec.max_tokens_per_doc:
        p = _cut(p, spec.max_tokens_per_doc)
    if len(p) <= budget:
        return [p]
    if not spec.chunked or budget < 2:
        if not spec.truncate:
            raise TooLongError(
                f"a document has {len(p)} tokens but only {budget} fit with the query; "
                "send truncate: true or shorter texts"
            )
        return [_cut(p, budget, spec.direction)]
    overlap = min(spec.chunk_overlap, budget // 2)
    first = Encoding.merge([p], growing_offsets=False)
    # the tokenizer's own overflow: windows of `budget` tokens, `overlap` shared
    first.truncate(budget, stride=overlap)
    rest = list(first.overflowing)[: spec.max_chunks_per_doc - 1]
    return [first, *rest]


def encode_chunked(
    pt: PairEncoding,
    pairs: Sequence[Sequence[str]],
    spec: ChunkSpec,
    *,
    max_length: int | None = None,
) -> EncodedRequest:
    """Encode ``[query, passage]`` pairs under ``spec``: ``doc_of[i]`` is the pair of window i.

    Each distinct query is tokenized once; a plain spec is exactly ``pt.encode(pairs)``.
    ``max_length`` (default: ``spec.max_length``, else the model's) is the longest pair.
    """
    n = len(pairs)
    max_length = max_length if max_length is not None else spec.max_length
    if spec.plain:
        return EncodedRequest(pt.encode(pairs, max_length=max_length), np.arange(n), n)
    max_length, qmax = pt.limits(max_length)
    queries, passages = pt.texts(pairs)
    tok = pt.tokenizer
    q_encs = encode_distinct(tok, queries)
    if not spec.truncate:
        for q in q_encs.values():
            if len(q) > qmax:
                raise TooLongError(
                    f"the query has {len(q)} tokens, more than the {qmax} allowed; "
                    "send truncate: true or a shorter query"
                )
    encoded: list[EncodedPair] = []
    docs: list[int] = []
    p_encs = tok.encode_batch(passages, add_special_tokens=False)
    for i, (query, p) in enumerate(zip(queries, p_encs)):
        q = q_encs[query]
        for w in windows(p, pt.passage_budget(q, max_length, qmax), spec):
            encoded.append(pt.assemble(q, w, max_length, qmax))
            docs.append(i)
    return EncodedRequest(encoded, np.asarray(docs, dtype=np.int64), n)


def encode_request(
    pt: PairEncoding, query: str, texts: Sequence[str], spec: ChunkSpec
) -> EncodedRequest:
    """The pairs of one server request (one query, many texts), ids kept as compact arrays."""
    req = encode_chunked(pt, [(query, t) for t in texts], spec)
    compact = [
        EncodedPair(
            np.asarray(e.ids, dtype=np.int32),
            np.asarray(e.type_ids, dtype=np.int8) if e.type_ids is not None else None,
            e.prefix_len,
        )
        for e in req.pairs
    ]
    return EncodedRequest(compact, req.doc_of, req.n_docs)


def best_per_document(scores: np.ndarray, doc_of: np.ndarray, n_docs: int) -> np.ndarray:
    """Each document's best score over its windows (float32; per column for 2-D scores)."""
    out = np.full((n_docs, *scores.shape[1:]), -np.inf, dtype=np.float32)
    np.maximum.at(out, doc_of, scores.astype(np.float32))
    return out
