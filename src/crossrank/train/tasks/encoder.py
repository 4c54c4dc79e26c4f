"""Cross-encoder training: one logit per pair, the group loss on the logits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from crossrank.errors import CrossrankError

if TYPE_CHECKING:
    from crossrank.train.config import TrainConfig
    from crossrank.train.losses import GroupLoss


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability of our encoder to ``p``."""
    from crossrank.models.encoder import Layer

    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        if isinstance(m, Layer):  # attention-probability dropout is a float of the layer
            m.attn_dropout = p


class EncoderTask:
    """BERT / RoBERTa / XLM-R cross-encoders (a bare encoder gets a fresh head)."""

    autocast = True

    def __init__(
        self, init_dir: Path, load_dir: Path, cfg: TrainConfig, device: torch.device
    ) -> None:
        from crossrank.config import EncoderConfig, read_config
        from crossrank.models import load_cross_encoder
        from crossrank.train.encoding import PairEncoder

        self.init_dir = init_dir
        self.model = load_cross_encoder(load_dir)
        self.config = EncoderConfig.from_dict(read_config(load_dir / "config.json"))
        if cfg.lora_rank is not None or cfg.start_layer is not None:
            raise CrossrankError("--lora-rank and --start-layer apply to decoder (LLM) models")
        if cfg.dropout is not None:
            set_dropout(self.model, cfg.dropout)
        self.model.encoder.gradient_checkpointing = cfg.gradient_checkpointing
        self.model.to(device).train()
        self.encoder = PairEncoder(
            init_dir, cfg, self.config.type_vocab_size > 1, self.config.pad_token_id
        )
        self.pad_id = self.encoder.pad_id

    def encode(self, groups) -> list:
        return self.encoder.encode(groups)

    def scores(self, model, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return model(input_ids, attention_mask, token_type_ids).reshape(len(input_ids), -1)

    def loss(self, scores: torch.Tensor, teacher: torch.Tensor | None, loss: GroupLoss):
        return loss(scores[..., 0], teacher)

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        from crossrank.train.checkpoint import write_model_files

        write_model_files(self.model, self.config, self.init_dir, dest, dtype=dtype)

    def evaluator(self, cfg: TrainConfig, device: torch.device):
        from crossrank.train.deveval import DevEvaluator

        return DevEvaluator(
            cfg.eval_dataset,
            split=cfg.eval_split,
            run=cfg.eval_run,
            max_queries=cfg.eval_max_queries,
            pair_tokenizer=self.encoder.pair,
            pad_id=self.encoder.pad_id,
            max_length=cfg.eval_max_length or self.encoder.pair_max,
            device=device,
        )
