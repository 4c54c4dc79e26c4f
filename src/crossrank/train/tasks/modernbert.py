"""ModernBERT cross-encoder training (full fine-tuning): one logit per pair, the group loss on
the logits, the encoders' training length rule
(:class:`~crossrank.train.encoding.PairEncoder`). The output is a
``ModernBertForSequenceClassification`` checkpoint (our tensor names are Hugging Face's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from crossrank.errors import CrossrankError
from crossrank.train.tasks.encoder import EncoderTask, set_dropout

if TYPE_CHECKING:
    from crossrank.train.config import TrainConfig


class ModernBertTask(EncoderTask):
    """``ModernBertForSequenceClassification`` rerankers."""

    def __init__(
        self, init_dir: Path, load_dir: Path, cfg: TrainConfig, device: torch.device
    ) -> None:
        from crossrank.models.modernbert import load_modernbert
        from crossrank.train.encoding import PairEncoder

        if cfg.lora_rank is not None or cfg.start_layer is not None:
            raise CrossrankError("--lora-rank and --start-layer apply to decoder (LLM) models")
        self.init_dir = init_dir
        self.model = load_modernbert(load_dir)
        self.config = self.model.config
        if cfg.dropout is not None:
            set_dropout(self.model, cfg.dropout)
        self.model.model.gradient_checkpointing = cfg.gradient_checkpointing
        self.model.to(device).train()
        self.encoder = PairEncoder(init_dir, cfg, False, self.config.pad_token_id)
        self.pad_id = self.encoder.pad_id

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        from crossrank.models.weights import save_safetensors
        from crossrank.train.checkpoint import TOKENIZER_FILES

        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        raw = dict(self.config.raw)
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            raw["torch_dtype"] = str(dtype).removeprefix("torch.")
        save_safetensors(state, dest / "model.safetensors")
        (dest / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        for name in TOKENIZER_FILES:
            src = self.init_dir / name
            if src.is_file():
                shutil.copyfile(src, dest / name)
