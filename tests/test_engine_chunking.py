"""Long documents: truncation sides, overlapping token windows, best window per document,
for every model family."""

from __future__ import annotations

import numpy as np
import pytest

from crossrank.engine.chunking import (
    ChunkSpec,
    TooLongError,
    best_per_document,
    encode_request,
    windows,
)
from crossrank.engine.tokenize import PairTokenizer, load_tokenizer
from crossrank.testing import short_max_length

TEXT = " ".join(["the giant panda is a bear to china what pandas eat and live in"] * 6)


@pytest.fixture(scope="module")
def pt(xlmr_dir) -> PairTokenizer:
    return PairTokenizer(load_tokenizer(xlmr_dir), max_length=40)


def ids(pt: PairTokenizer, text: str = TEXT) -> list[int]:
    return pt.tokenizer.encode(text, add_special_tokens=False).ids


def test_windows_overlap_and_cover(pt):
    p = pt.tokenizer.encode(TEXT, add_special_tokens=False)
    full = p.ids
    ws = [w.ids for w in windows(p, 20, ChunkSpec(max_chunks_per_doc=100, chunk_overlap=5))]
    assert ws[0] == full[:20]  # the first window is the truncated document
    step = 20 - 5
    for k, w in enumerate(ws):
        assert w == full[k * step : k * step + 20]
    assert ws[-1][-1] == full[-1] and len(ws) == -(-(len(full) - 5) // step)
    assert p.ids == full  # the input encoding is left untouched
    capped = windows(p, 20, ChunkSpec(max_chunks_per_doc=2, chunk_overlap=5))
    assert [w.ids for w in capped] == ws[:2]
    # overlap is at most half a window
    half = [w.ids for w in windows(p, 10, ChunkSpec(max_chunks_per_doc=3, chunk_overlap=50))]
    assert half[1][:5] == half[0][5:]


def test_truncation_sides_and_refusal(pt):
    p = pt.tokenizer.encode(TEXT, add_special_tokens=False)
    assert [w.ids for w in windows(p, 12, ChunkSpec())] == [p.ids[:12]]
    assert [w.ids for w in windows(p, 12, ChunkSpec(direction="left"))] == [p.ids[-12:]]
    assert [w.ids for w in windows(p, 1000, ChunkSpec(truncate=False))] == [p.ids]
    with pytest.raises(TooLongError):
        windows(p, 12, ChunkSpec(truncate=False))
    cut = windows(p, 20, ChunkSpec(max_chunks_per_doc=10, chunk_overlap=4, max_tokens_per_doc=30))
    assert [w.ids for w in cut] == [p.ids[:20], p.ids[16:30]]


def test_encode_request_matches_the_library(pt):
    texts = [TEXT, "pandas eat bamboo", ""]
    plain = encode_request(pt, "what is a panda", texts, ChunkSpec())
    ref = pt.encode([("what is a panda", t) for t in texts])
    assert [list(p.ids) for p in plain.pairs] == [r.ids for r in ref]
    assert plain.doc_of.tolist() == [0, 1, 2] and plain.n_tokens == sum(len(r) for r in ref)
    # chunked: the first window of each document is the library's pair
    chunked = encode_request(
        pt, "what is a panda", texts, ChunkSpec(max_chunks_per_doc=8, chunk_overlap=4)
    )
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


# -- every family: the library path ------------------------------------------------------

LONG = " ".join(f"sentence {i} about debian packages and their maintainers." for i in range(60))


def test_chunked_score_is_the_best_window_for_every_family(family_dir):
    """compute_score(max_chunks_per_doc=...) equals the best of the document's windows, each
    scored as its own pair; the first window is the truncated document; LLM windows keep their
    query prefix (shared across all chunks)."""
    from crossrank import Reranker
    from crossrank.engine.chunking import encode_chunked

    rr = Reranker(family_dir, max_length=short_max_length(family_dir))
    pairs = [("what do debian maintainers do?", LONG), ("short query", "a short passage")]
    spec = ChunkSpec(max_chunks_per_doc=50, chunk_overlap=8)
    req = encode_chunked(rr.tokenizer, pairs, spec)
    n_windows = int((req.doc_of == 0).sum())
    assert n_windows > 3 and int((req.doc_of == 1).sum()) == 1
    assert list(req.pairs[0].ids) == list(rr.tokenizer.encode(pairs[:1])[0].ids)
    assert all(len(p) <= len(req.pairs[0]) for p in req.pairs)  # no window outgrows the cut
    if "share_prefix" in rr.family.options:  # windows of one query share its prefix
        lens = {p.prefix_len for p in req.pairs[:n_windows]}
        assert len(lens) == 1 and lens.pop() > 0
    per_window = rr.engine.score_encoded(req.pairs)  # each window as its own pair
    chunked = rr.compute_score(pairs, max_chunks_per_doc=50, chunk_overlap=8)
    plain = rr.compute_score(pairs)
    assert abs(chunked[0] - per_window[:n_windows].max()) < 1e-5
    assert abs(chunked[1] - plain[1]) < 1e-5 and abs(per_window[0] - plain[0]) < 1e-5
    assert chunked[0] >= plain[0] - 1e-6
    capped = rr.compute_score(pairs, max_chunks_per_doc=2, chunk_overlap=8)
    assert abs(capped[0] - per_window[:2].max()) < 1e-5
    head_only = rr.compute_score(pairs, max_chunks_per_doc=50, max_tokens_per_doc=10)
    assert len(head_only) == 2
    ranked = rr.rank(pairs[0][0], [LONG, "a short passage"], max_chunks_per_doc=50, chunk_overlap=8)
    assert {r.index: r.score for r in ranked}[0] == pytest.approx(
        per_window[:n_windows].max(), abs=1e-5
    )


def test_a_relevant_sentence_at_the_end_needs_chunking():
    """The real bundled reranker: the document that answers the query only in its last
    sentence, past max_length, ranks first with chunking and not without."""
    from crossrank import Reranker

    rr = Reranker("crossrank/minilm-debian", max_length=64, device="cpu")
    filler = " ".join(
        f"The {w} package provides shared data files for the desktop environment."
        for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
    )
    query = "command line tool to convert flac audio files to mp3"
    answer = "flac2mp3 is a command line tool that converts FLAC audio files to MP3."
    docs = [
        "An audio player for the desktop that plays FLAC and MP3 files.",
        filler + " " + answer,
        "A library for decoding MP3 audio streams.",
    ]
    plain = rr.rank(query, docs)
    chunked = rr.rank(query, docs, max_chunks_per_doc=8)
    assert plain[-1].index == 1  # cut to its first 64 tokens: only filler is left
    assert chunked[0].index == 1


def test_cli_chunking_flags(bert_dir, tmp_path, capsys):
    import json

    from crossrank import Reranker
    from crossrank.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text(LONG + "\nshort passage\n")
    code = main(
        ["rank", "-m", str(bert_dir), "-q", "debian maintainers", "-d", str(docs)]
        + ["--json", "--max-length", "48", "--max-chunks-per-doc", "20", "--chunk-overlap", "8"]
    )
    assert code == 0
    got = {r["index"]: r["score"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    want = Reranker(bert_dir, max_length=48).compute_score(
        [("debian maintainers", LONG), ("debian maintainers", "short passage")],
        max_chunks_per_doc=20,
        chunk_overlap=8,
    )
    assert got == pytest.approx({0: want[0], 1: want[1]}, abs=1e-5)
    assert (
        main(
            ["rank", "-m", str(bert_dir), "-q", "q", "-d", str(docs)]
            + ["--max-chunks-per-doc", "0"]
        )
        == 2
    )
