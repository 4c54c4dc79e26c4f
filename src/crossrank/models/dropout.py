"""Dropout whose mask is cheap to draw on CPU (training only; inference has no dropout).

torch's CPU dropout draws one Bernoulli variate per element from a serial Mersenne Twister
(MKL's parallel generator is used on Intel CPUs only): about 12 ns per element on the AMD EPYC
of docs/performance.md, a fifth of a MiniLM training step in bf16. :func:`keep_mask` draws one
32-bit word per two elements and compares 15 random bits of each half with a threshold, about
1.5 ns per element. The result is dropout with probability ``round(p * 32768) / 32768`` (within
1.6e-5 of ``p``) and the matching ``1 / keep`` scale, so its expectation is exact; the mask
comes from torch's default generator, so ``torch.manual_seed``, checkpoint resume and gradient
checkpointing's recomputation see the same masks. CUDA keeps torch's own (fast) dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the mask resolution: drop probabilities are multiples of 1 / 32768
LEVELS = 1 << 15


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask of ``shape``, each element True (kept) with probability ``1 - p'``,
    where ``p' = round(p * 32768) / 32768``.

    Example:
        >>> m = keep_mask((1000, 100), 0.1, torch.device("cpu"))
        >>> 0.89 < m.float().mean().item() < 0.91
        True
    """
    n = 1
    for s in shape:
        n *= s
    # int32 random_() gives 31 uniform bits per word: bits 0-14 and 16-30 are two independent
    # 15-bit draws, read as the two int16 halves of the word with their top bit cleared
    words = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_()
    halves = words.view(torch.int16)[:n].bitwise_and_(LEVELS - 1)
    return (halves >= round(p * LEVELS)).reshape(shape)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the mask from :func:`keep_mask` on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    drop = round(p * LEVELS)
    if drop == 0:
        return x
    out = x * keep_mask(x.shape, p, x.device)
    return out.mul_(LEVELS / (LEVELS - drop))


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its CPU masks with :func:`keep_mask` (same ``p``, same module
    layout, so ``isinstance(m, nn.Dropout)`` and ``m.p = ...`` keep working)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
