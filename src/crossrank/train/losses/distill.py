"""``--loss distill``: distillation alone, ``-mean(sum(softmax(teacher) * log_softmax(student)))``
(the KL divergence to the teacher's distribution over the group, up to a constant). The data
must carry ``pos_scores`` / ``neg_scores`` on every line."""

from __future__ import annotations

import torch

from crossrank.errors import CrossrankError
from crossrank.train.losses._terms import distillation


class Distillation:
    """Soft-target cross-entropy towards the teacher's softmax over each group."""

    needs_teacher = True

    def __init__(self, distill_weight: float = 1.0) -> None:
        self.distill_weight = distill_weight

    def __call__(self, scores: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        if teacher is None:
            raise CrossrankError("--loss distill needs teacher scores (pos_scores / neg_scores)")
        return self.distill_weight * distillation(scores, teacher)
