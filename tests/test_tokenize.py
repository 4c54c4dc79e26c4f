"""The reference's input rules, checked against an implementation written out in the test."""

from __future__ import annotations

import pytest

from crossrank.engine.tokenize import PairTokenizer, load_tokenizer
from crossrank.errors import InputError
from oracle import hf_tokenizer, reference_inputs
from test_parity import pairs_mix


@pytest.mark.parametrize("fixture", ["bert_dir", "xlmr_dir"])
@pytest.mark.parametrize("max_length,qmax", [(512, None), (32, None), (20, 4), (16, 100)])
def test_encode_matches_reference_rules(request, fixture, max_length, qmax):
    model_dir = request.getfixturevalue(fixture)
    is_bert = fixture == "bert_dir"
    pt = PairTokenizer(
        load_tokenizer(model_dir),
        max_length=max_length,
        query_max_length=qmax,
        use_type_ids=is_bert,
    )
    pairs = pairs_mix()
    ours = pt.encode(pairs)
    # a query_max_length beyond the budget is capped so the pair always fits max_length
    n_special = 3 if is_bert else 4
    ref_qmax = min(qmax or max_length * 3 // 4, max_length - n_special)
    ref = reference_inputs(hf_tokenizer(model_dir), pairs, max_length, ref_qmax)
    for o, r in zip(ours, ref):
        assert o.ids == r["input_ids"]
        assert len(o.ids) <= max_length
        if is_bert:
            assert o.type_ids == r["token_type_ids"]
        else:
            assert o.type_ids is None


def test_passage_side_truncation_keeps_query(bert_dir):
    pt = PairTokenizer(load_tokenizer(bert_dir), max_length=12)
    tok = pt.tokenizer
    q = tok.encode("what is panda", add_special_tokens=False).ids
    (enc,) = pt.encode([("what is panda", "the giant panda is a bear species endemic to china")])
    assert len(enc.ids) == 12
    assert enc.ids[1 : 1 + len(q)] == q  # query intact, passage cut


def test_instructions_are_prepended(xlmr_dir):
    pt = PairTokenizer(load_tokenizer(xlmr_dir), query_instruction="Q: ", passage_instruction="P: ")
    plain = PairTokenizer(load_tokenizer(xlmr_dir))
    assert pt.encode([("panda", "bear")]) == plain.encode([("Q: panda", "P: bear")])


def test_bad_pairs_raise_input_error(bert_dir):
    pt = PairTokenizer(load_tokenizer(bert_dir))
    with pytest.raises(InputError, match="pair 1"):
        pt.encode([("a", "b"), ("only one",)])
    with pytest.raises(InputError, match="strings"):
        pt.encode([("a", 3)])
    with pytest.raises(InputError, match="no room"):
        pt.encode([("a", "b")], max_length=3)
