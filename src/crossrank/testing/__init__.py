"""Tiny tokenizers and random checkpoints, one builder per model family, for crossrank's tests,
benchmarks and scripts (nothing downloaded). Not used by the library itself.

:data:`BUILDERS` maps every family of :data:`crossrank.families.REGISTRY` to the builder of
its tiny checkpoint; :func:`tiny_checkpoint` calls it by family name. The builders whose
checkpoints are a parity test's oracle use transformers, imported only when they run
(``pip install 'crossrank[test]'``).

Modules: :mod:`~crossrank.testing.corpus` (built-in texts, tiny training data),
:mod:`~crossrank.testing.tokenizers` (WordPiece, Unigram, byte-level BPE),
:mod:`~crossrank.testing.encoders` and :mod:`~crossrank.testing.decoders` (checkpoints).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossrank.testing.corpus import CORPUS, TOPICS, WORDS, train_corpus, write_groups
from crossrank.testing.decoders import (
    decoder_tokenizer,
    gemma_checkpoint,
    hf_decoder,
    minicpm_checkpoint,
    qwen3_checkpoint,
    qwen3_seqcls_checkpoint,
    random_decoder,
)
from crossrank.testing.encoders import (
    bert_checkpoint,
    minilm_checkpoint,
    modernbert_checkpoint,
    random_encoder,
    roberta_checkpoint,
)
from crossrank.testing.tokenizers import (
    bpe_tokenizer,
    unigram_tokenizer,
    wordpiece_tokenizer,
    write_tokenizer,
)

#: family name (a key of ``crossrank.families.REGISTRY``) -> builder of its tiny checkpoint
BUILDERS: dict[str, Callable[..., Path]] = {
    "encoder": bert_checkpoint,
    "gemma": gemma_checkpoint,
    "minicpm-layerwise": minicpm_checkpoint,
    "qwen3": qwen3_checkpoint,
    "modernbert": modernbert_checkpoint,
}


def tiny_checkpoint(family: str, path: Path, **options: Any) -> Path:
    """A tiny random checkpoint of ``family`` written to ``path`` (``options``: the builder's
    ``seed`` and config overrides, e.g. ``num_hidden_layers=3``); returns ``path``."""
    return BUILDERS[family](Path(path), **options)


def short_max_length(model_dir: Path, base: int = 48) -> int:
    """A max_length that leaves a tiny checkpoint of any family room for a short passage:
    ``base``, plus, for Qwen3-Reranker, the ~95 tokens its template and default instruction
    take with the tiny tokenizer (other families' templates are short)."""
    archs = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures", [])
    return base + 95 if any(a.startswith("Qwen3") for a in archs) else base


__all__ = [
    "BUILDERS",
    "CORPUS",
    "TOPICS",
    "WORDS",
    "bert_checkpoint",
    "bpe_tokenizer",
    "decoder_tokenizer",
    "gemma_checkpoint",
    "hf_decoder",
    "minicpm_checkpoint",
    "minilm_checkpoint",
    "modernbert_checkpoint",
    "qwen3_checkpoint",
    "qwen3_seqcls_checkpoint",
    "random_decoder",
    "random_encoder",
    "roberta_checkpoint",
    "short_max_length",
    "tiny_checkpoint",
    "train_corpus",
    "unigram_tokenizer",
    "wordpiece_tokenizer",
    "write_groups",
    "write_tokenizer",
]
