"""bge-reranker-v2-gemma (``GemmaForCausalLM``): FlagLLMReranker's input rules, score = the
logit of "Yes" at the last position."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.llm_tokenize import LLMPairTokenizer, special_token_id
from crossrank.families.base import ScoreOptions
from crossrank.families.decoder import DecoderFamily
from crossrank.models.decoder import DecoderConfig, DecoderLM
from crossrank.models.gemma import GemmaForCausalLM


def bge_llm_tokenizer(
    tokenizer: Tokenizer, model_dir: Path, options: ScoreOptions, *, always_bos: bool
):
    """FlagEmbedding's LLM input rules (``A: query``, ``B: passage``, prompt) for ``options``."""
    qi, pi = options.query_instruction, options.passage_instruction
    return LLMPairTokenizer(
        tokenizer,
        bos_id=special_token_id(tokenizer, model_dir, "bos_token"),
        pad_id=special_token_id(tokenizer, model_dir, "pad_token"),
        always_bos=always_bos,
        max_length=options.max_length,
        query_max_length=options.query_max_length,
        prompt=options.prompt,
        query_instruction="A: " if qi is None else qi,
        passage_instruction="B: " if pi is None else pi,
    )


class GemmaFamily(DecoderFamily):
    name = "gemma"
    architectures = ("GemmaForCausalLM",)
    score = 'the logit of the first token of "Yes" at the last position'

    def parse_config(self, raw: dict[str, Any]) -> DecoderConfig:
        config = DecoderConfig.from_dict(raw, kind=self.name)
        # transformers maps the legacy "gelu" of Gemma configs to the tanh approximation
        act = raw.get("hidden_activation") or raw.get("hidden_act") or "gelu_pytorch_tanh"
        return replace(config, hidden_act="gelu_pytorch_tanh" if act == "gelu" else act)

    def model_class(self) -> type[DecoderLM]:
        return GemmaForCausalLM

    def pair_tokenizer(
        self, tokenizer: Tokenizer, model_dir: Path, options: ScoreOptions
    ) -> PairEncoding:
        return bge_llm_tokenizer(tokenizer, model_dir, options, always_bos=False)

    def score_spec(
        self, model: DecoderLM, tokenizer: PairEncoding, options: ScoreOptions
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        assert isinstance(tokenizer, LLMPairTokenizer)
        return {"token_ids": [tokenizer.yes_id]}, ("score",)


FAMILY = GemmaFamily()
