"""Model code (our own PyTorch modules) and checkpoint loading."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from crossrank.config import EncoderConfig, read_config
from crossrank.errors import ModelLoadError
from crossrank.models.encoder import CrossEncoder
from crossrank.models.weights import convert_state_dict, iter_tensors, weight_files

logger = logging.getLogger(__name__)

__all__ = ["CrossEncoder", "EncoderConfig", "load_cross_encoder"]


def load_cross_encoder(
    model_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> CrossEncoder:
    """Load a BERT / RoBERTa / XLM-R checkpoint in Hugging Face layout as a :class:`CrossEncoder`.

    Tensors stream from the weight files one at a time and are cast to ``dtype`` on the way,
    so no full-precision copy of the model is materialised. A bare encoder checkpoint
    (``BertModel``, ``XLMRobertaModel``) gets a freshly initialised head and a warning.
    """
    model_dir = Path(model_dir)
    config = EncoderConfig.from_dict(read_config(model_dir / "config.json"))
    with torch.device("meta"):
        model = CrossEncoder(config)
    state, unused = convert_state_dict(iter_tensors(weight_files(model_dir)), config, dtype)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    head_missing = [k for k in missing if k.startswith("head.")]
    other_missing = [k for k in missing if not k.startswith("head.")]
    if other_missing:
        raise_missing(model_dir, other_missing)
    if head_missing:
        if config.has_head:
            logger.warning(
                "%s declares %s but has no weights for %s; they are freshly initialised",
                model_dir,
                config.architecture,
                ", ".join(head_missing),
            )
        else:
            logger.warning(
                "%s is a bare %s checkpoint: the classification head is freshly initialised "
                "(fine-tune it before trusting its scores)",
                model_dir,
                config.architecture,
            )
        for k in head_missing:
            param = model.get_parameter(k)
            state[k] = torch.empty(param.shape, dtype=dtype)
    if unused:
        logger.debug("unused tensors in %s: %s", model_dir, unused[:10])
    model.load_state_dict(state, assign=True, strict=True)
    if head_missing:
        model.init_head(tuple(sorted({k.split(".")[1] for k in head_missing})))
    return model.to(device).eval()


def raise_missing(model_dir: Path, missing: list[str]) -> None:
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    raise ModelLoadError(f"weights in {model_dir} lack {len(missing)} tensors: {shown}")
