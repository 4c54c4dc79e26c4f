"""rank_pairs / ranked_lists: the flattening and the ordering every rank_many shares."""

import pytest

from crossrank.errors import InputError
from crossrank.ranking import RankResult, rank_pairs, ranked_lists


def test_rank_pairs_flattens_in_order_and_reads_text_fields():
    doc_lists, pairs = rank_pairs(["q1", "q2"], [["a", {"text": "b", "id": 7}], ("c",)])
    assert pairs == [("q1", "a"), ("q1", "b"), ("q2", "c")]
    assert doc_lists == [["a", {"text": "b", "id": 7}], ["c"]]


@pytest.mark.parametrize(
    ("queries", "documents", "message"),
    [
        ("q", [["a"]], "queries must be a list of strings"),
        (["q1", "q2"], [["a"]], "2 queries but 1 document lists"),
        (["q"], ["abc"], "documents of query 0 must be a list of documents"),
        ([3], [["a"]], "query 0 must be a string"),
        (["q"], [["a", {"title": "t"}]], "document 1 must be a string or a mapping"),
    ],
)
def test_rank_pairs_names_each_mistake(queries, documents, message):
    with pytest.raises(InputError, match=message):
        rank_pairs(queries, documents)


def test_ranked_lists_best_first_ties_in_input_order_top_k_and_documents():
    docs = [["a", "b", "c"], [], ["d", "e"]]
    scores = [0.5, 0.9, 0.5, 2.0, -1.0]
    ranked = ranked_lists(scores, docs)
    assert [[r.index for r in lst] for lst in ranked] == [[1, 0, 2], [], [0, 1]]
    assert ranked[0][0] == RankResult(1, 0.9, None)
    top = ranked_lists(scores, docs, top_k=1, return_documents=True)
    assert top == [[RankResult(1, 0.9, "b")], [], [RankResult(0, 2.0, "d")]]
    assert ranked_lists(scores, docs, top_k=0) == [[], [], []]
