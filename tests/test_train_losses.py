"""Loss values of the reference recipe against hand computations."""

from __future__ import annotations

import math

import torch

from crossrank.train.losses import distillation, group_cross_entropy, group_loss


def test_group_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    row1 = math.log(1 + math.exp(-1) + math.exp(-2))  # -log softmax(2 | 2, 1, 0)
    row2 = -math.log(1 / (2 + math.exp(3)))  # positive is column 0
    assert abs(group_cross_entropy(logits).item() - (row1 + row2) / 2) < 1e-6


def test_distillation_matches_hand_computation():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(2.0)]])  # softmax -> [1/3, 2/3]
    # -(1/3 * log 1/2 + 2/3 * log 1/2) = log 2
    assert abs(distillation(student, teacher).item() - math.log(2)) < 1e-6
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[5.0, 5.0, -100.0]])  # ~[1/2, 1/2, 0]
    lse = math.log(math.e + 1 + math.exp(-1))
    expected = -(0.5 * (1 - lse) + 0.5 * (0 - lse))
    assert abs(distillation(student, teacher).item() - expected) < 1e-6


def test_group_loss_adds_weighted_distillation_and_grads_flow():
    logits = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    teacher = torch.tensor([[3.0, 0.0, 1.0]])
    ce = group_cross_entropy(logits).item()
    kd = distillation(logits, teacher).item()
    assert abs(group_loss(logits).item() - ce) < 1e-6
    assert abs(group_loss(logits, teacher, 0.5).item() - (ce + 0.5 * kd)) < 1e-6
    assert abs(group_loss(logits, teacher, 0.0).item() - ce) < 1e-6
    group_loss(logits, teacher).backward()
    assert logits.grad is not None and logits.grad[0, 0] < 0  # pushes the positive up


def test_loss_registry_by_name():
    import pytest

    from crossrank.errors import CrossrankError
    from crossrank.train.losses import LOSSES, make_loss

    assert set(LOSSES) >= {"ce", "distill"}
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, -1.0]])
    teacher = torch.tensor([[3.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    ce = make_loss("ce", 0.5)
    assert not ce.needs_teacher
    assert abs(ce(logits, None).item() - group_cross_entropy(logits).item()) < 1e-6
    assert abs(ce(logits, teacher).item() - group_loss(logits, teacher, 0.5).item()) < 1e-6
    kd = make_loss("distill")
    assert kd.needs_teacher
    assert abs(kd(logits, teacher).item() - distillation(logits, teacher).item()) < 1e-6
    with pytest.raises(CrossrankError, match="teacher"):
        kd(logits, None)
    with pytest.raises(CrossrankError, match="unknown --loss"):
        make_loss("hinge")
