"""Group losses, by ``--loss`` name. A loss maps group scores ``[batch, group]`` (positive in
column 0) and optional teacher scores of the same shape to a scalar.

A new loss is one module in this package plus one line in :data:`LOSSES`.

Example:
    >>> loss = make_loss("ce", distill_weight=1.0)
    >>> loss(torch.tensor([[2.0, 0.0]]), None)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Protocol

import torch

from crossrank.errors import CrossrankError
from crossrank.train.losses._terms import distillation, group_cross_entropy
from crossrank.train.losses.ce import GroupCrossEntropy
from crossrank.train.losses.distill import Distillation


class GroupLoss(Protocol):
    """What the trainer needs of a loss."""

    #: the data must carry teacher scores (checked before training starts)
    needs_teacher: bool

    def __call__(self, scores: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor: ...


#: ``--loss`` name -> class taking ``distill_weight``
LOSSES: dict[str, type] = {
    "ce": GroupCrossEntropy,
    "distill": Distillation,
}


def make_loss(name: str, distill_weight: float = 1.0) -> GroupLoss:
    """The loss registered under ``name``."""
    if name not in LOSSES:
        raise CrossrankError(f"unknown --loss {name!r}; use one of {', '.join(LOSSES)}")
    return LOSSES[name](distill_weight)


def task_loss(
    scores: torch.Tensor, teacher: torch.Tensor | None, loss: GroupLoss, self_distill: bool
) -> torch.Tensor:
    """The loss of a micro-step from scores ``[batch, group, k]`` (positive at index 0): the
    group loss of each output column, summed; with ``self_distill`` (the layerwise reranker)
    and no teacher scores, plus the distillation of every column but the last towards the
    last one's softmax (detached)."""
    total = loss(scores[..., 0], teacher)
    for k in range(1, scores.shape[-1]):
        total = total + loss(scores[..., k], teacher)
    if self_distill and teacher is None:
        last = scores[..., -1]
        for k in range(scores.shape[-1] - 1):
            total = total + distillation(scores[..., k], last)
    return total


def group_loss(
    logits: torch.Tensor, teacher: torch.Tensor | None = None, distill_weight: float = 1.0
) -> torch.Tensor:
    """Cross-entropy, plus ``distill_weight`` x the distillation term when teacher scores exist
    (``--loss ce``)."""
    return GroupCrossEntropy(distill_weight)(logits, teacher)


__all__ = [
    "LOSSES",
    "GroupLoss",
    "distillation",
    "group_cross_entropy",
    "group_loss",
    "make_loss",
    "task_loss",
]
