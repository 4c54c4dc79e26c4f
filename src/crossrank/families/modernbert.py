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

from crossrank.engine.backend import Backend
from crossrank.families.base import Runtime, ScoreOptions, Scoring, claims_by_architecture
from crossrank.models.modernbert import ARCHITECTURES, ModernBertConfig


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


class LoadedModernBert:
    """A ModernBERT cross-encoder's tokenizer and backend (torch, ONNX or a device pool)."""

    def __init__(self, model_dir: Path, config: ModernBertConfig, runtime: Runtime) -> None:
        from crossrank.engine.backend import create_backend
        from crossrank.engine.tokenize import load_tokenizer, pad_token_id
        from crossrank.models.modernbert import load_modernbert

        self.config = config
        self.runtime = runtime
        self.tokenizer = load_tokenizer(model_dir)
        self.pad_id = pad_token_id(self.tokenizer, model_dir, config.pad_token_id)
        self.backend: Backend = create_backend(
            runtime.backend,
            model_dir=model_dir,
            load_model=lambda dev: load_modernbert(model_dir, dtype=runtime.dtype, device=dev),
            device=runtime.device,
            dtype=runtime.dtype,
            quantize=runtime.quantize,
            devices=runtime.devices,
        )
        self.model = self.backend.model

    def scoring(self, options: ScoreOptions) -> Scoring:
        from crossrank.engine.longest_first import LongestFirstPairTokenizer
        from crossrank.engine.runner import ONNX_TOKEN_BUDGET, cpu_token_budget

        pt = LongestFirstPairTokenizer(
            self.tokenizer,
            max_length=options.max_length,
            query_max_length=options.query_max_length,
            query_instruction=options.query_instruction,
            passage_instruction=options.passage_instruction,
        )
        budget = None
        if self.backend.name == "onnx":
            budget = ONNX_TOKEN_BUDGET
        elif self.runtime.device.type == "cpu":
            # GeGLU: the widest activation is Wi's output, 2 x intermediate
            budget = cpu_token_budget(self.config.hidden_size, 2 * self.config.intermediate_size)
        return Scoring(pt, self.backend, self.pad_id, default_max_tokens=budget)


FAMILY = ModernBertFamily()
