"""crossrank.scoring.score_stream: input order, bounded reading ahead, same scores."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.errors import InputError
from crossrank.scoring import chunks, score_stream
from crossrank.testing import WORDS


@pytest.fixture(scope="module")
def reranker(bert_dir):
    return Reranker(bert_dir, device="cpu", show_progress=False)


def make_pairs(n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    return [
        (" ".join(rng.choice(WORDS, 2)), " ".join(rng.choice(WORDS, int(rng.integers(1, 30)))))
        for _ in range(n)
    ]


def test_scores_equal_one_call_in_input_order(reranker, caplog):
    pairs = make_pairs(45)
    expected = reranker.compute_score(pairs)
    with caplog.at_level(logging.INFO, logger="crossrank.scoring"):
        got = list(score_stream(reranker, iter(pairs), chunk_size=7))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(set(np.round(got, 4))) > 10  # distinct scores: order is really checked
    summary = [r.getMessage() for r in caplog.records if r.name == "crossrank.scoring"]
    assert len(summary) == 1 and summary[0].startswith("scored 45 pairs in ")
    assert "pairs/s, chunks of 7" in summary[0]


def test_reads_at_most_one_chunk_ahead(reranker):
    """The input is pulled lazily: when the first score comes out, only the first chunk has
    been read, so memory is bounded by the chunk whatever the input size."""
    pulled = 0

    def endless():
        nonlocal pulled
        for pair in itertools.cycle(make_pairs(50)):  # endless: more than the test reads
            pulled += 1
            yield pair

    stream = score_stream(reranker, endless(), chunk_size=16)
    first = [next(stream) for _ in range(16)]
    assert pulled == 16 and len(first) == 16
    next(stream)
    assert pulled == 32
    stream.close()


def test_other_inputs_and_arguments(reranker):
    assert list(score_stream(reranker, [])) == []
    pairs = make_pairs(5)
    tuples = tuple(pairs)
    np.testing.assert_allclose(
        list(score_stream(reranker, tuples, chunk_size=2, normalize=True)),
        reranker.compute_score(pairs, normalize=True),
        atol=1e-6,
    )
    for bad in (0, -3, 1.5, True):
        with pytest.raises(InputError, match="chunk_size must be a positive integer"):
            list(score_stream(reranker, pairs, chunk_size=bad))
    assert list(chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]
