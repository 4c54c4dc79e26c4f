"""Encoder cross-encoders: BERT, RoBERTa, XLM-R (bge-reranker-base / large / v2-m3, MiniLM...).

Score: the classification head's logit on the first token (``[CLS]`` / ``<s>``), inputs built
as FlagEmbedding's FlagReranker builds them (:class:`~crossrank.engine.tokenize.PairTokenizer`).
Runs on our PyTorch model, ONNX Runtime (optionally int8) or a pool of devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from crossrank.config import (
    BARE_ENCODERS,
    MODEL_TYPES,
    SEQUENCE_CLASSIFICATION,
    EncoderConfig,
    read_config,
)
from crossrank.engine.backend import Backend
from crossrank.engine.encoding import PairEncoding
from crossrank.engine.factory import create_backend
from crossrank.engine.onnx_export import OnnxExport
from crossrank.engine.runner import ONNX_TOKEN_BUDGET, cpu_token_budget, openvino_token_budget
from crossrank.engine.tokenize import PairTokenizer, load_tokenizer, pad_token_id
from crossrank.families.base import Runtime, ScoreOptions, Scoring, claims_by_architecture
from crossrank.families.training import Checkpoint, EncoderTask, TrainSettings, TrainTask
from crossrank.models import load_cross_encoder
from crossrank.models.encoder_padded import PaddedCrossEncoder
from crossrank.models.weights import ours_to_hf


class EncoderFamily:
    """The encoder cross-encoder family (see the module docstring)."""

    name = "encoder"
    architectures = (*SEQUENCE_CLASSIFICATION, *BARE_ENCODERS)
    options = frozenset({"backend", "quantize", "devices"})
    backends = ("torch", "onnx", "openvino")
    torch_quantize: tuple[str, ...] = ()
    score = "the classification head's logit on the first token"

    def claims(self, raw: dict[str, Any]) -> bool:
        if claims_by_architecture(self, raw):
            return True
        # a config without architectures: the model_type decides
        return not raw.get("architectures") and raw.get("model_type") in MODEL_TYPES

    def parse_config(self, raw: dict[str, Any]) -> EncoderConfig:
        return EncoderConfig.from_dict(raw)

    def load(self, model_dir: Path, config: EncoderConfig, runtime: Runtime) -> LoadedEncoder:
        return LoadedEncoder(self, model_dir, config, runtime)

    #: the input rules (FlagEmbedding's FlagReranker)
    pair_class: type[PairTokenizer] = PairTokenizer

    def pair_tokenizer(
        self, tokenizer: Tokenizer, config: Any, options: ScoreOptions
    ) -> PairEncoding:
        """The family's input rules (:attr:`pair_class`) for ``options``."""
        return self.pair_class(
            tokenizer,
            max_length=options.max_length,
            query_max_length=options.query_max_length,
            query_instruction=options.query_instruction,
            passage_instruction=options.passage_instruction,
            use_type_ids=self.type_ids(config),
        )

    def type_ids(self, config: EncoderConfig) -> bool:
        """Whether the model reads token type ids."""
        return config.type_vocab_size > 1

    def trainable(self, load_dir: Path) -> tuple[nn.Module, nn.Module, Any, Checkpoint]:
        """Our model of ``load_dir`` to train: ``(model, the module with its
        gradient_checkpointing switch, config, () -> (state under the checkpoint's names,
        config.json content))``; a bare encoder gets a fresh head."""
        model = load_cross_encoder(load_dir)
        config = EncoderConfig.from_dict(read_config(load_dir / "config.json"))
        return (
            model,
            model.encoder,
            config,
            lambda: (ours_to_hf(model.state_dict(), config), config.to_dict()),
        )

    def train_task(
        self, init_dir: Path, load_dir: Path, settings: TrainSettings, device: torch.device
    ) -> TrainTask:
        """Full fine-tuning (:class:`~crossrank.families.training.EncoderTask`) of
        :meth:`trainable`. ``load_dir`` holds the weights to start from, ``init_dir`` the
        tokenizer."""
        model, body, config, checkpoint = self.trainable(load_dir)
        tokenizer = load_tokenizer(init_dir)
        return EncoderTask(
            settings,
            device,
            model=model,
            body=body,
            pair=self.pair_tokenizer(tokenizer, config, ScoreOptions(settings.max_length)),
            pad_id=pad_token_id(tokenizer, init_dir, config.pad_token_id),
            checkpoint=checkpoint,
            tokenizer_dir=init_dir,
        )

    def onnx_export(self, config: EncoderConfig) -> OnnxExport:
        """The padded forward pass (:mod:`crossrank.models.encoder_padded`), token type ids
        where the model has them, ONNX Runtime's BERT fusions."""
        return OnnxExport(
            PaddedCrossEncoder,
            with_types=config.type_vocab_size > 1,
            bert_fusions=(config.num_attention_heads, config.hidden_size),
        )


class LoadedEncoder:
    """A cross-encoder's tokenizer and backend (torch, ONNX or a device pool), loaded once.

    Encoder families differ in two hooks here, :meth:`load_model` and :attr:`ffn_width` (the
    widest activation, for the CPU token budget), and in their family's ``pair_tokenizer`` and
    ``onnx_export``.
    """

    def __init__(self, family: Any, model_dir: Path, config: Any, runtime: Runtime) -> None:
        self.family = family
        self.config = config
        self.runtime = runtime
        self.tokenizer = load_tokenizer(model_dir)
        self.pad_id = pad_token_id(self.tokenizer, model_dir, config.pad_token_id)
        self.backend: Backend = create_backend(
            runtime.backend,
            model_dir=model_dir,
            load_model=lambda dev, dtype=runtime.dtype: self.load_model(model_dir, dtype, dev),
            device=runtime.device,
            dtype=runtime.dtype,
            quantize=runtime.quantize,
            devices=runtime.devices,
            export=family.onnx_export(config),
        )
        self.model = self.backend.model

    @property
    def ffn_width(self) -> int:
        """Width of the feed-forward activation (intermediate_size for BERT-style layers)."""
        return self.config.intermediate_size

    def load_model(self, model_dir: Path, dtype: torch.dtype, device: torch.device) -> nn.Module:
        """Our PyTorch model of the checkpoint on ``device``."""
        return load_cross_encoder(model_dir, dtype=dtype, device=device)

    def scoring(self, options: ScoreOptions) -> Scoring:
        budget = None
        if self.backend.name == "onnx":
            budget = ONNX_TOKEN_BUDGET
        elif self.backend.name == "openvino":
            budget = openvino_token_budget(self.config.hidden_size)
        elif self.runtime.device.type == "cpu":
            budget = cpu_token_budget(self.config.hidden_size, self.ffn_width)
        pair = self.family.pair_tokenizer(self.tokenizer, self.config, options)
        return Scoring(pair, self.backend, self.pad_id, default_max_tokens=budget)


FAMILY = EncoderFamily()
