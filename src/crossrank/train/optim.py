"""Optimiser, learning-rate schedule and precision settings of a training run."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from crossrank.errors import CrossrankError
from crossrank.inputs import dtype_named

logger = logging.getLogger(__name__)


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
    """AdamW over the parameters that require gradients (frozen ones get no state).

    torch's fused kernel where every parameter is a float tensor on CPU or CUDA: the same
    update in one pass over all tensors (on CPU the per-tensor loop cost 6-9% of a MiniLM
    step), the same state dict, so checkpoints resume either way.
    """
    groups = param_groups(model, weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warmup from 0 to the peak lr over ``warmup`` steps, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_amp(
    dtype: str | None, device: torch.device, flags: Collection[str] | None = None
) -> torch.dtype | None:
    """Autocast dtype of ``--dtype`` for encoders: bf16 / fp16 on CUDA, bf16 on CPU.

    On CPU, bf16 autocast runs the matrix products on the CPU's bf16 units (``avx512_bf16``,
    AMX; oneDNN through torch) with the weights, gradients and optimizer state kept in
    fp32. A CPU without such units emulates bf16 and is slower than fp32, so that is refused
    with the reason. ``flags`` defaults to this machine's (:func:`crossrank.cpu.cpu_features`).

    Example:
        >>> resolve_amp("bf16", torch.device("cpu"), flags={"avx512_bf16"})
        torch.bfloat16
    """
    wanted = dtype_named(dtype, "--dtype")
    if wanted == torch.float32:
        return None
    if device.type == "cuda":
        return wanted
    if device.type != "cpu" or wanted is not torch.bfloat16:
        raise CrossrankError(
            f"--dtype {dtype} (autocast) runs on CUDA, or bf16 on a CPU with bf16 units; use fp32"
        )
    from crossrank.cpu import BF16_UNITS, cpu_features

    units = sorted(BF16_UNITS.intersection(cpu_features() if flags is None else flags))
    if not units:
        raise CrossrankError(
            "--dtype bf16 on CPU needs bf16 units (avx512_bf16 or AMX), which this CPU "
            "lacks (bf16 would be emulated, slower than fp32); use fp32"
        )
    logger.info(
        "bf16 autocast on CPU (%s); weights and optimizer state stay fp32", ", ".join(units)
    )
    return torch.bfloat16


def resolve_save_dtype(dtype: str | None) -> torch.dtype | None:
    """Dtype of ``--save-dtype`` (None: keep fp32)."""
    wanted = dtype_named(dtype, "--save-dtype")
    return None if wanted == torch.float32 else wanted
