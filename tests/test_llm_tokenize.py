"""LLM reranker input rules against FlagEmbedding's rules written out by hand (tests/oracle.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from oracle import hf_llm_tokenizer, reference_llm_inputs, yes_id

PAIRS = [
    ("what is panda?", "The giant panda is a bear species endemic to China."),
    ("what is panda?", ""),
    ("", "Debian is a free operating system for your computer. " * 6),
    ("Der schnelle braune Fuchs springt über den faulen Hund " * 4, "Größe, Straße, Übung."),
    ("日本語の文章", "我喜欢吃熊猫形状的饼干。熊猫是中国的国宝。" * 3),
    ("search engines rank documents " * 12, "cross-encoders rescore the top hundred " * 12),
]


def ours(model_dir, always_bos=False, **kw):
    from crossrank.engine.llm_tokenize import LLMPairTokenizer, special_token_id
    from crossrank.engine.tokenize import load_tokenizer

    tok = load_tokenizer(model_dir)
    return LLMPairTokenizer(
        tok,
        bos_id=special_token_id(tok, model_dir, "bos_token"),
        pad_id=special_token_id(tok, model_dir, "pad_token"),
        always_bos=always_bos,
        **kw,
    )


@pytest.mark.parametrize(
    "max_length, query_max_length",
    [(512, None), (64, None), (40, None), (16, None), (8, 200), (6, None)],
)
def test_gemma_rules_match_reference(gemma_dir, max_length, query_max_length):
    ref = reference_llm_inputs(
        hf_llm_tokenizer(gemma_dir), PAIRS, max_length=max_length, query_max_length=query_max_length
    )
    got = ours(gemma_dir).encode(PAIRS, max_length=max_length, query_max_length=query_max_length)
    assert [g.ids for g in got] == ref
    assert all(g.ids[0] == 2 for g in got)  # gemma: <bos> (id 2) differs from <pad> (id 0)


def test_truncation_budget_quirk_is_exercised(gemma_dir):
    """The parametrised cases above do hit both branches of the only_second truncation."""
    lt = ours(gemma_dir)
    extra = len(lt.sep_ids) + len(lt.prompt_ids)
    # max_length 64: query cut to 48, passage to 64; the pair is then cut to 64 + extra
    cut = lt.encode(PAIRS[-1:], max_length=64)[0]
    assert len(cut) - extra == 64 + extra
    # a query longer than the budget: the passage side is too short to absorb it, no cut
    whole = lt.encode(PAIRS[-1:], max_length=8, query_max_length=200)[0]
    assert len(whole) - extra > 8 + extra
    assert whole.ids[whole.prefix_len : whole.prefix_len + 8] == lt._ids("B: " + PAIRS[-1][1])[:8]


def test_custom_prompt_and_instructions(gemma_dir):
    prompt = "Is B relevant to A? Yes or No."
    ref = reference_llm_inputs(hf_llm_tokenizer(gemma_dir), PAIRS, max_length=40, prompt=prompt)
    got = ours(gemma_dir, prompt=prompt).encode(PAIRS, max_length=40)
    assert [g.ids for g in got] == ref
    assert ours(gemma_dir, query_instruction="Q: ").encode(PAIRS[:1])[0].ids != ref[0]


def test_layerwise_rules_always_bos(minicpm_dir):
    ref = reference_llm_inputs(hf_llm_tokenizer(minicpm_dir), PAIRS, max_length=20, always_bos=True)
    got = ours(minicpm_dir, always_bos=True).encode(PAIRS, max_length=20)
    assert [g.ids for g in got] == ref


def test_bos_equal_to_pad_is_left_out(gemma_dir, tmp_path):
    d = tmp_path / "bos_is_pad"
    shutil.copytree(gemma_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["pad_token"] = cfg["bos_token"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    ref = reference_llm_inputs(hf_llm_tokenizer(d), PAIRS, max_length=40)
    got = ours(d).encode(PAIRS, max_length=40)
    assert [g.ids for g in got] == ref
    assert got[0].ids[0] != 2
    assert ours(d, always_bos=True).encode(PAIRS[:1])[0].ids[0] == 2


def test_yes_token_and_prefix(gemma_dir):
    lt = ours(gemma_dir)
    assert lt.yes_id == yes_id(hf_llm_tokenizer(gemma_dir))
    a, b = lt.encode(PAIRS[:2], max_length=64)
    # pairs of one query share [bos] + "A: query" + sep, and nothing more
    assert a.prefix_len == b.prefix_len
    assert a.ids[: a.prefix_len] == b.ids[: b.prefix_len]
    assert a.ids[a.prefix_len - len(lt.sep_ids) : a.prefix_len] == lt.sep_ids
    assert a.ids[a.prefix_len] != b.ids[b.prefix_len] or len(b) < len(a)


def test_bad_pairs(gemma_dir):
    from crossrank.errors import InputError

    with pytest.raises(InputError, match="pair 0"):
        ours(gemma_dir).encode(["just a string"])
    with pytest.raises(InputError, match="strings"):
        ours(gemma_dir).encode([("q", 3)])
