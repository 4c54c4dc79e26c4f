"""Long documents: truncation sides and overlapping token windows."""

from __future__ import annotations

import numpy as np
import pytest

from crossrank.engine.tokenize import PairTokenizer, load_tokenizer
from crossrank.server.chunking import (
    ChunkSpec,
    TooLongError,
    best_per_document,
    encode_request,
    windows,
)

TEXT = " ".join(["the giant panda is a bear to china what pandas eat and live in"] * 6)


@pytest.fixture(scope="module")
def pt(xlmr_dir) -> PairTokenizer:
    return PairTokenizer(load_tokenizer(xlmr_dir), max_length=40)


def ids(pt: PairTokenizer, text: str = TEXT) -> list[int]:
    return pt.tokenizer.encode(text, add_special_tokens=False).ids


def test_windows_overlap_and_cover(pt):
    p = pt.tokenizer.encode(TEXT, add_special_tokens=False)
    full = p.ids
    ws = [w.ids for w in windows(p, 20, ChunkSpec(max_chunks=100, overlap=5))]
    assert ws[0] == full[:20]  # the first window is the truncated document
    step = 20 - 5
    for k, w in enumerate(ws):
        assert w == full[k * step : k * step + 20]
    assert ws[-1][-1] == full[-1] and len(ws) == -(-(len(full) - 5) // step)
    assert p.ids == full  # the input encoding is left untouched
    capped = windows(p, 20, ChunkSpec(max_chunks=2, overlap=5))
    assert [w.ids for w in capped] == ws[:2]
    # overlap is at most half a window
    half = [w.ids for w in windows(p, 10, ChunkSpec(max_chunks=3, overlap=50))]
    assert half[1][:5] == half[0][5:]


def test_truncation_sides_and_refusal(pt):
    p = pt.tokenizer.encode(TEXT, add_special_tokens=False)
    assert [w.ids for w in windows(p, 12, ChunkSpec())] == [p.ids[:12]]
    assert [w.ids for w in windows(p, 12, ChunkSpec(direction="left"))] == [p.ids[-12:]]
    assert [w.ids for w in windows(p, 1000, ChunkSpec(truncate=False))] == [p.ids]
    with pytest.raises(TooLongError):
        windows(p, 12, ChunkSpec(truncate=False))
    cut = windows(p, 20, ChunkSpec(max_chunks=10, overlap=4, max_doc_tokens=30))
    assert [w.ids for w in cut] == [p.ids[:20], p.ids[16:30]]


def test_encode_request_matches_the_library(pt):
    texts = [TEXT, "pandas eat bamboo", ""]
    plain = encode_request(pt, "what is a panda", texts, ChunkSpec())
    ref = pt.encode([("what is a panda", t) for t in texts])
    assert [list(p.ids) for p in plain.pairs] == [r.ids for r in ref]
    assert plain.doc_of.tolist() == [0, 1, 2] and plain.n_tokens == sum(len(r) for r in ref)
    # chunked: the first window of each document is the library's pair
    chunked = encode_request(pt, "what is a panda", texts, ChunkSpec(max_chunks=8, overlap=4))
    firsts = [int(np.flatnonzero(chunked.doc_of == d)[0]) for d in range(3)]
    assert [list(chunked.pairs[i].ids) for i in firsts] == [r.ids for r in ref]
    assert np.bincount(chunked.doc_of).tolist()[1:] == [1, 1]
    assert all(len(p) <= 40 for p in chunked.pairs)
    q = ids(pt, "what is a panda")
    for i in np.flatnonzero(chunked.doc_of == 0):  # every chunk keeps the whole query
        assert list(chunked.pairs[i].ids)[1 : 1 + len(q)] == q


def test_long_query_refused_without_truncation(pt):
    with pytest.raises(TooLongError):
        encode_request(pt, TEXT, ["a"], ChunkSpec(truncate=False))


def test_best_per_document():
    got = best_per_document(np.array([0.1, 0.7, -1.0, 0.3]), np.array([0, 0, 1, 2]), 3)
    assert got.tolist() == pytest.approx([0.7, -1.0, 0.3])
