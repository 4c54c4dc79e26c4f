"""The two terms of the reference's group losses, shared by the registered losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over each group ``[batch, group]`` with the positive (column 0) as target."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def distillation(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``-mean(sum(softmax(teacher) * log_softmax(student)))`` over groups ``[batch, group]``.

    This is the KL divergence to the teacher's distribution up to the teacher's entropy (a
    constant): the same gradients. ``teacher`` is detached.
    """
    targets = torch.softmax(teacher.detach().float(), dim=-1)
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
