"""Optimiser, learning-rate schedule and precision settings of a training run."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crossrank.errors import CrossrankError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over trainable parameters: no weight decay on biases and norm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the parameters that require gradients (frozen ones get no state)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warmup from 0 to the peak lr over ``warmup`` steps, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_amp(dtype: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of ``--dtype`` for encoders (CUDA only)."""
    if dtype in (None, "fp32", "float32"):
        return None
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in table:
        raise CrossrankError(f"unknown --dtype {dtype!r}; use fp32, bf16 or fp16")
    if device.type != "cuda":
        raise CrossrankError(f"--dtype {dtype} (autocast) is only supported on CUDA; use fp32")
    return table[dtype]


def resolve_save_dtype(dtype: str | None) -> torch.dtype | None:
    """Dtype of ``--save-dtype`` (None: keep fp32)."""
    table = {None: None, "fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise CrossrankError(f"unknown --save-dtype {dtype!r}; use fp32, fp16 or bf16")
    return table[dtype]
