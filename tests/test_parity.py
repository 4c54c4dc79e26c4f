"""Scores equal the reference (FlagEmbedding's input rules + transformers' model) within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.testing import CORPUS
from oracle import reference_scores

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

LONG = " ".join(CORPUS * 6)


def pairs_mix() -> list[tuple[str, str]]:
    """Short, long, truncated, empty-ish and non-Latin pairs in one batch."""
    return [
        ("what is panda?", "hi"),
        ("what is panda?", "The giant panda is a bear species endemic to China."),
        ("Was ist ein Fuchs?", "Der schnelle braune Fuchs springt über den faulen Hund."),
        ("東京はどこですか", "日本語の文章をトークン化します。東京は日本の首都です。"),
        ("熊猫", "我喜欢吃熊猫形状的饼干。熊猫是中国的国宝。"),
        (
            "столица России",
            "Быстрая коричневая лиса прыгает через ленивую собаку. Москва — столица России.",
        ),
        ("debian", LONG),  # passage truncated
        (LONG, "a short passage"),  # query cut to query_max_length
        (LONG, LONG),  # both cut
        ("x", ""),  # empty passage
        ("rerank " * 3, "search engines rank documents; " * 5),
    ]


@pytest.mark.parametrize("fixture", ["xlmr_dir", "xlmr_long_dir", "roberta_dir", "bert_dir"])
@pytest.mark.parametrize("max_length", [None, 48])
def test_scores_match_reference(request, fixture, max_length):
    model_dir = request.getfixturevalue(fixture)
    rr = Reranker(model_dir, device="cpu", max_length=max_length or 512)
    pairs = pairs_mix()
    ours = rr.compute_score(pairs)
    ref = reference_scores(model_dir, pairs, max_length=rr.max_length)
    diff = np.abs(np.array(ours) - np.array(ref))
    assert diff.max() < 1e-4, diff
    # the tiny models are random but not degenerate: scores differ between pairs
    assert np.std(ref) > 1e-2


def test_mixed_batches_do_not_change_scores(xlmr_dir):
    """One pair scored alone or inside a batch of very different lengths gets the same score."""
    pairs = pairs_mix()
    rr = Reranker(xlmr_dir, device="cpu")
    together = rr.compute_score(pairs)
    alone = [rr.compute_score(p)[0] for p in pairs]
    tiny_batches = Reranker(xlmr_dir, device="cpu", max_batch_tokens=64).compute_score(pairs)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together, tiny_batches, atol=1e-5)


def test_query_max_length_and_instructions(bert_dir):
    pairs = [("what is the giant panda and where does it live today", "bears in China")]
    rr = Reranker(bert_dir, device="cpu", max_length=64, query_max_length=5)
    ref = reference_scores(bert_dir, pairs, max_length=64, query_max_length=5)
    assert abs(rr.compute_score(pairs)[0] - ref[0]) < 1e-4

    rr = Reranker(bert_dir, device="cpu", query_instruction="query: ", passage_instruction="doc: ")
    ref = reference_scores(bert_dir, [("query: " + pairs[0][0], "doc: " + pairs[0][1])])
    assert abs(rr.compute_score(pairs)[0] - ref[0]) < 1e-4
