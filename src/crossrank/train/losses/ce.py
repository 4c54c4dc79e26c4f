"""``--loss ce``: group cross-entropy (the reference's), plus ``--distill-weight`` x the
distillation term when the data has teacher scores (FlagEmbedding's knowledge distillation)."""

from __future__ import annotations

import torch

from crossrank.train.losses._terms import distillation, group_cross_entropy


class GroupCrossEntropy:
    """Cross-entropy with the positive (column 0) as target; + distillation with a teacher."""

    needs_teacher = False

    def __init__(self, distill_weight: float = 1.0) -> None:
        self.distill_weight = distill_weight

    def __call__(self, scores: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        loss = group_cross_entropy(scores)
        if teacher is not None and self.distill_weight:
            loss = loss + self.distill_weight * distillation(scores, teacher)
        return loss
