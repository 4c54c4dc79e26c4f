"""crossrank.testing: a tiny checkpoint builder for every registered model family, each
checkpoint run by its family; the builders that need no transformers (the scripts' and
benchmarks' random encoders and decoders) give checkpoints crossrank scores."""

from __future__ import annotations

import json
import math

import pytest

from crossrank import Reranker, testing
from crossrank.config import read_config
from crossrank.families import REGISTRY, family_for, get_family
from crossrank.testing.decoders import SPECS

PAIRS = [("what is panda?", "The giant panda is a bear."), ("what is panda?", "Debian is free.")]


def test_every_registered_family_has_a_builder():
    assert set(testing.BUILDERS) == set(REGISTRY)


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_tiny_checkpoint_is_run_by_its_family(family, tmp_path):
    model_dir = testing.tiny_checkpoint(family, tmp_path / family, num_hidden_layers=2)
    assert family_for(read_config(model_dir / "config.json")) is get_family(family)
    scores = Reranker(model_dir, device="cpu", max_length=160).compute_score(PAIRS)
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


@pytest.mark.parametrize("family", sorted(SPECS))
def test_random_decoder_needs_no_transformers(family, tmp_path):
    tok = testing.decoder_tokenizer(family, vocab_size=400)
    model_dir = testing.random_decoder(family, tmp_path / family, tok, std=0.1, hidden_size=32)
    raw = read_config(model_dir / "config.json")
    assert family_for(raw) is get_family(family) and raw["hidden_size"] == 32
    scores = Reranker(model_dir, device="cpu").compute_score(PAIRS)
    assert scores[0] != scores[1]


def test_random_encoder(tmp_path):
    tok = testing.unigram_tokenizer()
    raw = {
        "architectures": ["XLMRobertaForSequenceClassification"],
        "model_type": "xlm-roberta",
        "vocab_size": tok.get_vocab_size(),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 130,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "num_labels": 1,
        "initializer_range": 0.3,
    }
    model_dir = testing.random_encoder(tmp_path / "enc", raw, tok, {"model_max_length": 128})
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["model_max_length"] == 128
    scores = Reranker(model_dir, device="cpu").compute_score(PAIRS)
    assert scores[0] != scores[1]


def test_bpe_tokenizer_checks_the_tokens_it_must_have():
    tok = testing.bpe_tokenizer(["yes no"] * 20, ["<pad>"], 300, must_have=("yes",))
    assert tok.token_to_id("<pad>") == 0
    with pytest.raises(ValueError, match="zebra"):
        testing.bpe_tokenizer(["yes no"] * 20, ["<pad>"], 300, must_have=("zebra",))
