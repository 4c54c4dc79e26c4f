"""The registry of model families: which code runs which checkpoint.

Each entry names a module that defines ``FAMILY`` (see :mod:`crossrank.families.base` for what
a family provides). Adding a family is one module plus one line here; the first family whose
``claims`` accepts a config.json runs it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from crossrank.config import read_config
from crossrank.errors import UnsupportedModelError
from crossrank.families.base import Family
from crossrank.families.decoder import DecoderFamily
from crossrank.models.decoder import DecoderLM, load_decoder_weights

#: family name -> module defining ``FAMILY``
REGISTRY: dict[str, str] = {
    "encoder": "crossrank.families.encoder",
    "gemma": "crossrank.families.gemma",
    "minicpm-layerwise": "crossrank.families.minicpm",
    "qwen3": "crossrank.families.qwen3",
    "modernbert": "crossrank.families.modernbert",
}


def get_family(name: str) -> Family:
    """The family registered as ``name``."""
    return importlib.import_module(REGISTRY[name]).FAMILY


def families() -> list[Family]:
    """Every registered family, in registry order."""
    return [get_family(name) for name in REGISTRY]


def family_for(raw: dict[str, Any]) -> Family:
    """The family that runs the checkpoint whose config.json is ``raw``.

    Raises :class:`~crossrank.errors.UnsupportedModelError` listing what is supported.
    """
    for family in families():
        if family.claims(raw):
            return family
    archs = raw.get("architectures") or []
    if archs:
        raise UnsupportedModelError(
            f"unsupported architecture {archs[0]!r}; supported: "
            + ", ".join(supported_architectures())
        )
    raise UnsupportedModelError(
        f"config.json names no architecture and model_type {raw.get('model_type', '')!r} is "
        "not one crossrank recognises; supported architectures: "
        + ", ".join(supported_architectures())
    )


def supported_architectures() -> list[str]:
    """Names of every architecture crossrank can load (sorted)."""
    return sorted({a for f in families() for a in f.architectures})


def load_decoder(
    model_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> DecoderLM:
    """Our decoder model of an LLM reranker checkpoint in Hugging Face layout (its family, and so
    its model class, from config.json)."""
    model_dir = Path(model_dir)
    raw = read_config(model_dir / "config.json")
    family = family_for(raw)
    if not isinstance(family, DecoderFamily):
        raise UnsupportedModelError(f"{model_dir} is not a decoder reranker checkpoint")
    config = family.parse_config(raw)
    return load_decoder_weights(model_dir, family.model_class(), config, dtype=dtype, device=device)
