"""Encoder cross-encoders: BERT, RoBERTa, XLM-R (bge-reranker-base / large / v2-m3, MiniLM...).

Score: the classification head's logit on the first token (``[CLS]`` / ``<s>``), inputs built
as FlagEmbedding's FlagReranker builds them (:class:`~crossrank.engine.tokenize.PairTokenizer`).
Runs on our PyTorch model, ONNX Runtime (optionally int8) or a pool of devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrank.config import BARE_ENCODERS, MODEL_TYPES, SEQUENCE_CLASSIFICATION, EncoderConfig
from crossrank.engine.backend import Backend
from crossrank.engine.encoding import PairEncoding
from crossrank.engine.factory import create_backend
from crossrank.engine.runner import ONNX_TOKEN_BUDGET, cpu_token_budget
from crossrank.engine.tokenize import PairTokenizer, load_tokenizer, pad_token_id
from crossrank.families.base import Runtime, ScoreOptions, Scoring, claims_by_architecture
from crossrank.models import load_cross_encoder


class EncoderFamily:
    """The encoder cross-encoder family (see the module docstring)."""

    name = "encoder"
    architectures = (*SEQUENCE_CLASSIFICATION, *BARE_ENCODERS)
    options = frozenset({"backend", "quantize", "devices"})
    backends = ("torch", "onnx")
    score = "the classification head's logit on the first token"

    def claims(self, raw: dict[str, Any]) -> bool:
        if claims_by_architecture(self, raw):
            return True
        # a config without architectures: the model_type decides
        return not raw.get("architectures") and raw.get("model_type") in MODEL_TYPES

    def parse_config(self, raw: dict[str, Any]) -> EncoderConfig:
        return EncoderConfig.from_dict(raw)

    def load(self, model_dir: Path, config: EncoderConfig, runtime: Runtime) -> LoadedEncoder:
        return LoadedEncoder(model_dir, config, runtime)


class LoadedEncoder:
    """A cross-encoder's tokenizer and backend (torch, ONNX or a device pool), loaded once.

    Encoder families differ in three hooks: :meth:`load_model`, :meth:`pair_tokenizer` and
    :attr:`ffn_width` (the widest activation, for the CPU token budget).
    """

    def __init__(self, model_dir: Path, config: Any, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.tokenizer = load_tokenizer(model_dir)
        self.pad_id = pad_token_id(self.tokenizer, model_dir, config.pad_token_id)
        self.backend: Backend = create_backend(
            runtime.backend,
            model_dir=model_dir,
            load_model=lambda dev: self.load_model(model_dir, runtime.dtype, dev),
            device=runtime.device,
            dtype=runtime.dtype,
            quantize=runtime.quantize,
            devices=runtime.devices,
        )
        self.model = self.backend.model

    @property
    def ffn_width(self) -> int:
        """Width of the feed-forward activation (intermediate_size for BERT-style layers)."""
        return self.config.intermediate_size

    def load_model(self, model_dir: Path, dtype: torch.dtype, device: torch.device) -> nn.Module:
        """Our PyTorch model of the checkpoint on ``device``."""
        return load_cross_encoder(model_dir, dtype=dtype, device=device)

    def pair_tokenizer(self, options: ScoreOptions) -> PairEncoding:
        """The input rules (FlagEmbedding's FlagReranker) for ``options``."""
        return PairTokenizer(
            self.tokenizer,
            max_length=options.max_length,
            query_max_length=options.query_max_length,
            query_instruction=options.query_instruction,
            passage_instruction=options.passage_instruction,
            use_type_ids=self.config.type_vocab_size > 1,
        )

    def scoring(self, options: ScoreOptions) -> Scoring:
        budget = None
        if self.backend.name == "onnx":
            budget = ONNX_TOKEN_BUDGET
        elif self.runtime.device.type == "cpu":
            budget = cpu_token_budget(self.config.hidden_size, self.ffn_width)
        return Scoring(
            self.pair_tokenizer(options), self.backend, self.pad_id, default_max_tokens=budget
        )


FAMILY = EncoderFamily()
