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

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.longest_first import LongestFirstPairTokenizer
from crossrank.families.base import Runtime, ScoreOptions, claims_by_architecture
from crossrank.families.encoder import LoadedEncoder
from crossrank.models.modernbert import ARCHITECTURES, ModernBertConfig, load_modernbert


class ModernBertFamily:
    """The ModernBERT cross-encoder family (see the module docstring)."""

    name = "modernbert"
    architectures = ARCHITECTURES
    options = frozenset({"backend", "quantize", "devices"})
    #: what backend="auto" may pick: ONNX runs when asked for, but its int8 fidelity on real
    #: ModernBERT weights is unmeasured (no checkpoint can be downloaded here), so auto stays
    #: with PyTorch
    backends = ("torch",)
    score = "the classifier's logit on the pooled sequence (first token or mean, per config)"

    def claims(self, raw: dict[str, Any]) -> bool:
        return claims_by_architecture(self, raw)

    def parse_config(self, raw: dict[str, Any]) -> ModernBertConfig:
        return ModernBertConfig.from_dict(raw)

    def load(self, model_dir: Path, config: ModernBertConfig, runtime: Runtime) -> LoadedModernBert:
        return LoadedModernBert(model_dir, config, runtime)


class LoadedModernBert(LoadedEncoder):
    """A ModernBERT cross-encoder: its model, transformers' truncation rule, GeGLU width."""

    @property
    def ffn_width(self) -> int:
        return 2 * self.config.intermediate_size  # GeGLU: Wi's output is 2 x intermediate

    def load_model(self, model_dir: Path, dtype: torch.dtype, device: torch.device) -> nn.Module:
        return load_modernbert(model_dir, dtype=dtype, device=device)

    def pair_tokenizer(self, options: ScoreOptions) -> PairEncoding:
        return LongestFirstPairTokenizer(
            self.tokenizer,
            max_length=options.max_length,
            query_max_length=options.query_max_length,
            query_instruction=options.query_instruction,
            passage_instruction=options.passage_instruction,
        )


FAMILY = ModernBertFamily()
