"""Group losses of the reference's reranker fine-tuning recipe."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over each group ``[batch, group]`` with the positive (column 0) as target."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def distillation(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``-mean(sum(softmax(teacher) * log_softmax(student)))`` over groups ``[batch, group]``."""
    targets = torch.softmax(teacher.detach().float(), dim=-1)
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def group_loss(
    logits: torch.Tensor, teacher: torch.Tensor | None = None, distill_weight: float = 1.0
) -> torch.Tensor:
    """Cross-entropy, plus ``distill_weight`` x the distillation term when teacher scores exist."""
    loss = group_cross_entropy(logits)
    if teacher is not None and distill_weight:
        loss = loss + distill_weight * distillation(logits, teacher)
    return loss
