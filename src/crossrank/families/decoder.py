"""What the decoder (LLM) reranker families share: loading our decoder, the tokenizer, and a
:class:`~crossrank.engine.llm_backend.DecoderBackend` per option set.

A decoder family subclasses :class:`DecoderFamily` and fills in its model class, its pair
tokenizer and what its score is (:meth:`DecoderFamily.score_spec`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.llm_backend import DecoderBackend
from crossrank.engine.tokenize import load_tokenizer
from crossrank.errors import CrossrankError
from crossrank.families.base import Runtime, ScoreOptions, Scoring, claims_by_architecture
from crossrank.models.decoder import DecoderConfig, DecoderLM, load_decoder_weights


class DecoderFamily(ABC):
    """Base of the decoder families: subclasses set the class attributes and two hooks."""

    name: str
    architectures: tuple[str, ...]
    options: frozenset[str] = frozenset({"prompt", "share_prefix"})
    backends: tuple[str, ...] = ("torch",)
    score: str

    def claims(self, raw: dict[str, Any]) -> bool:
        return claims_by_architecture(self, raw)

    def parse_config(self, raw: dict[str, Any]) -> DecoderConfig:
        return DecoderConfig.from_dict(raw, kind=self.name)

    @abstractmethod
    def model_class(self) -> type[DecoderLM]:
        """Our PyTorch model class for this family."""

    @abstractmethod
    def pair_tokenizer(
        self, tokenizer: Tokenizer, model_dir: Path, options: ScoreOptions
    ) -> PairEncoding:
        """The family's input rules for these options."""

    @abstractmethod
    def score_spec(
        self, model: DecoderLM, tokenizer: PairEncoding, options: ScoreOptions
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``(keyword arguments of model.score, names of its output columns)``."""

    def load(self, model_dir: Path, config: DecoderConfig, runtime: Runtime) -> LoadedDecoder:
        if runtime.backend != "torch":
            raise CrossrankError(f"the {self.name} family runs on backend='torch' only")
        return LoadedDecoder(self, model_dir, config, runtime)


class LoadedDecoder:
    """A decoder loaded once; each option set gets its own tokenizer and backend over it."""

    def __init__(
        self, family: DecoderFamily, model_dir: Path, config: DecoderConfig, runtime: Runtime
    ) -> None:
        self.family = family
        self.model_dir = model_dir
        self.runtime = runtime
        self.tokenizer = load_tokenizer(model_dir)
        self.decoder: DecoderLM = load_decoder_weights(
            model_dir, family.model_class(), config, dtype=runtime.dtype, device=runtime.device
        )
        self.model: torch.nn.Module | None = self.decoder

    def scoring(self, options: ScoreOptions) -> Scoring:
        pt = self.family.pair_tokenizer(self.tokenizer, self.model_dir, options)
        kwargs, outputs = self.family.score_spec(self.decoder, pt, options)
        backend = DecoderBackend(
            self.decoder,
            self.runtime.device,
            self.runtime.dtype,
            score_kwargs=kwargs,
            n_outputs=len(outputs),
            share_prefix=options.share_prefix,
        )
        # pads are never attended to (right padding, causal attention)
        return Scoring(pt, backend, pad_id=0, outputs=outputs, resolved=dict(kwargs))
