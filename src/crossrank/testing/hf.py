"""transformers for the builders whose checkpoints are the parity tests' oracle (imported only
when such a checkpoint is built: transformers is no dependency of crossrank)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tokenizers import Tokenizer

from crossrank.testing.tokenizers import write_tokenizer


def transformers() -> ModuleType:
    """The transformers module; an ImportError saying how to install it when it is missing."""
    try:
        import transformers as hf
    except ImportError as e:
        raise ImportError(
            "crossrank.testing builds this checkpoint with transformers (the test oracle): "
            "pip install 'crossrank[test]'"
        ) from e
    return hf


def perturb_norms(model: torch.nn.Module, mean: float, std: float) -> None:
    """Draw every normalization weight from N(``mean``, ``std``): they start at a constant
    (1, or 0 for Gemma's ``1 + w``), and a test should catch one that is ignored."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(mean, std)


def write_hf(
    path: Path, model: torch.nn.Module, tok: Tokenizer, tokenizer_config: dict[str, Any]
) -> Path:
    """A transformers model (``save_pretrained``: config.json, model.safetensors) and its
    tokenizer files into ``path``; returns ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(path), safe_serialization=True)
    write_tokenizer(path, tok, tokenizer_config)
    return path
