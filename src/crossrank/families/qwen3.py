"""Qwen3-Reranker (``Qwen3ForCausalLM``, or the converted ``Qwen3ForSequenceClassification``):
its authors' chat template with a task instruction (:mod:`crossrank.engine.qwen3_tokenize`);
score = ``logit("yes") - logit("no")`` at the last position, so ``normalize=True`` gives the
authors' P(yes). ``instruction=`` sets the ``<Instruct>`` text, per Reranker or per call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.qwen3_tokenize import Qwen3PairTokenizer
from crossrank.errors import CrossrankError, UnsupportedModelError
from crossrank.families.base import ScoreOptions
from crossrank.families.decoder import DecoderFamily
from crossrank.models.decoder import DecoderConfig, DecoderLM
from crossrank.models.qwen3 import Qwen3Reranker


class Qwen3Family(DecoderFamily):
    name = "qwen3"
    architectures = ("Qwen3ForCausalLM", "Qwen3ForSequenceClassification")
    options = frozenset({"instruction", "share_prefix", "quantize"})
    score = 'logit("yes") - logit("no") at the last position (sigmoid: the authors\' P(yes))'
    example_prompt = "instruction"  # a training example's prompt is its <Instruct> text

    def parse_config(self, raw: dict[str, Any]) -> DecoderConfig:
        config = DecoderConfig.from_dict(raw, kind=self.name)
        archs = raw.get("architectures") or []
        arch = next((a for a in archs if a in self.architectures), config.architecture)
        types = raw.get("layer_types") or []
        if raw.get("use_sliding_window") or any(t != "full_attention" for t in types):
            raise UnsupportedModelError(
                "Qwen3 sliding-window attention is not supported (Qwen3-Reranker checkpoints "
                "use full attention: use_sliding_window false)"
            )
        labels = int(raw.get("num_labels") or len(raw.get("id2label") or {}) or 1)
        if arch == "Qwen3ForSequenceClassification" and labels != 1:
            raise UnsupportedModelError(
                f"the checkpoint's head has {labels} labels; a reranker needs exactly 1 "
                "(the converted Qwen3-Reranker head: yes row - no row)"
            )
        return replace(config, architecture=arch, qk_norm=True)

    def model_class(self) -> type[DecoderLM]:
        return Qwen3Reranker

    def pair_tokenizer(
        self, tokenizer: Tokenizer, model_dir: Path, options: ScoreOptions
    ) -> PairEncoding:
        given = [
            name
            for name in ("query_instruction", "passage_instruction", "query_max_length")
            if getattr(options, name) is not None
        ]
        if given:
            raise CrossrankError(
                f"{', '.join(given)}: not supported by the qwen3 family (its template has an "
                "<Instruct> field: use instruction=; max_length cuts the document first)"
            )
        return Qwen3PairTokenizer(
            tokenizer, max_length=options.max_length, instruction=options.instruction
        )

    def score_spec(
        self, model: DecoderLM, tokenizer: PairEncoding, options: ScoreOptions
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        assert isinstance(model, Qwen3Reranker) and isinstance(tokenizer, Qwen3PairTokenizer)
        if model.classification:  # the converted head already is the yes row - no row
            return {}, ("score",)
        return {"token_ids": [tokenizer.yes_id, tokenizer.no_id]}, ("score",)


FAMILY = Qwen3Family()
