"""ModernBERT cross-encoders (``ModernBertForSequenceClassification``, e.g.
gte-reranker-modernbert-base): score = the classifier's logit on the pooled sequence
("cls" or "mean" pooling, as config.json says). Inputs are built as transformers' tokenizer
builds them for the models' reference code (``tokenizer(query, passage, truncation=True)``:
the pair template, "longest_first" truncation; :mod:`crossrank.engine.longest_first`).
Runs on our PyTorch model (one device or a pool) or ONNX Runtime (fp32 or int8), like the
BERT-style encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrank.engine.longest_first import LongestFirstPairTokenizer
from crossrank.engine.onnx_export import OnnxExport
from crossrank.families.base import Runtime, claims_by_architecture
from crossrank.families.encoder import EncoderFamily, LoadedEncoder
from crossrank.families.training import Checkpoint
from crossrank.models.modernbert import ARCHITECTURES, ModernBertConfig, load_modernbert
from crossrank.models.modernbert_padded import PaddedModernBert


class ModernBertFamily(EncoderFamily):
    """The ModernBERT cross-encoder family (see the module docstring): the encoder family's
    loading, training and backends with its own model, input rules and export."""

    name = "modernbert"
    architectures = ARCHITECTURES
    #: what backend="auto" may pick: ONNX runs when asked for, but its int8 fidelity on real
    #: ModernBERT weights is unmeasured (no checkpoint can be downloaded here), so auto stays
    #: with PyTorch
    backends = ("torch",)
    torch_quantize: tuple[str, ...] = ()
    score = "the classifier's logit on the pooled sequence (first token or mean, per config)"
    #: transformers' ``truncation=True`` rule ("longest_first"); training keeps the encoders'
    #: length rule (:meth:`~crossrank.engine.tokenize.PairTokenizer.training`)
    pair_class = LongestFirstPairTokenizer

    def claims(self, raw: dict[str, Any]) -> bool:
        return claims_by_architecture(self, raw)

    def parse_config(self, raw: dict[str, Any]) -> ModernBertConfig:
        return ModernBertConfig.from_dict(raw)

    def load(self, model_dir: Path, config: ModernBertConfig, runtime: Runtime) -> LoadedModernBert:
        return LoadedModernBert(self, model_dir, config, runtime)

    def type_ids(self, config: ModernBertConfig) -> bool:
        return False

    def trainable(self, load_dir: Path) -> tuple[nn.Module, nn.Module, Any, Checkpoint]:
        """The output is a ``ModernBertForSequenceClassification`` checkpoint (our tensor names
        are Hugging Face's)."""
        model = load_modernbert(load_dir)
        return model, model.model, model.config, lambda: (model.state_dict(), model.config.raw)

    def onnx_export(self, config: ModernBertConfig) -> OnnxExport:
        """Its own padded graph (:mod:`crossrank.models.modernbert_padded`), which ONNX
        Runtime's BERT fusions do not match (its session-level optimisations do)."""
        return OnnxExport(PaddedModernBert)


class LoadedModernBert(LoadedEncoder):
    """A ModernBERT cross-encoder: its model and GeGLU width."""

    @property
    def ffn_width(self) -> int:
        return 2 * self.config.intermediate_size  # GeGLU: Wi's output is 2 x intermediate

    def load_model(self, model_dir: Path, dtype: torch.dtype, device: torch.device) -> nn.Module:
        return load_modernbert(model_dir, dtype=dtype, device=device)


FAMILY = ModernBertFamily()
