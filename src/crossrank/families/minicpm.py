"""bge-reranker-v2-minicpm-layerwise (``LayerWiseMiniCPMForCausalLM``): FlagEmbedding's
LayerWiseFlagLLMReranker input rules (bos always added); score = the head of a cutoff layer
applied to the last position (default: the last layer). Several ``cutoff_layers`` give one
score column per layer (:meth:`~crossrank.Reranker.compute_layer_scores`)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from crossrank.engine.encoding import PairEncoding
from crossrank.errors import CrossrankError, UnsupportedModelError
from crossrank.families.base import ScoreOptions
from crossrank.families.decoder import DecoderFamily
from crossrank.families.gemma import bge_llm_tokenizer
from crossrank.families.training import TrainSettings
from crossrank.models.decoder import DecoderConfig, DecoderLM
from crossrank.models.minicpm import LayerWiseMiniCPMForCausalLM


class MiniCPMLayerwiseFamily(DecoderFamily):
    name = "minicpm-layerwise"
    architectures = ("LayerWiseMiniCPMForCausalLM",)
    options = frozenset({"prompt", "share_prefix", "cutoff_layers", "quantize"})
    score = "the cutoff layer's head on the last position (default: the last layer)"
    self_distill = True

    def parse_config(self, raw: dict[str, Any]) -> DecoderConfig:
        head_type, multi = raw.get("head_type", "simple"), raw.get("head_multi", True)
        if head_type != "simple" or not multi:
            raise UnsupportedModelError(
                f"layerwise heads of type {head_type!r} (head_multi={multi}) are not "
                "supported; bge-reranker-v2-minicpm-layerwise uses 'simple' multi heads"
            )
        config = DecoderConfig.from_dict(raw, kind=self.name)
        return replace(
            config,
            hidden_act=raw.get("hidden_act", "silu"),
            head_dim=config.hidden_size // config.num_attention_heads,
            residual_scale=config.scale_depth / math.sqrt(config.num_hidden_layers),
        )

    def model_class(self) -> type[DecoderLM]:
        return LayerWiseMiniCPMForCausalLM

    def train_options(self, model: DecoderLM, settings: TrainSettings) -> dict[str, Any]:
        """Every layer from ``--start-layer`` (default the checkpoint's first head) to the last
        is trained: one score column each."""
        conf = model.config
        start = conf.start_layer if settings.start_layer is None else settings.start_layer
        if not conf.start_layer <= start <= conf.num_hidden_layers:
            raise CrossrankError(
                f"--start-layer {start}: this checkpoint has heads for layers "
                f"{conf.start_layer} to {conf.num_hidden_layers}"
            )
        return {"cutoff_layers": tuple(range(start, conf.num_hidden_layers + 1))}

    def pair_tokenizer(
        self, tokenizer: Tokenizer, model_dir: Path, options: ScoreOptions
    ) -> PairEncoding:
        return bge_llm_tokenizer(tokenizer, model_dir, options, always_bos=True)

    def score_spec(
        self, model: DecoderLM, tokenizer: PairEncoding, options: ScoreOptions
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        assert isinstance(model, LayerWiseMiniCPMForCausalLM)
        cutoffs = model.check_cutoffs(options.cutoff_layers or [model.config.num_hidden_layers])
        return {"cutoff_layers": cutoffs}, tuple(f"layer {k}" for k in cutoffs)


FAMILY = MiniCPMLayerwiseFamily()
