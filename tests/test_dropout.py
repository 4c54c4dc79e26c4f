"""The CPU dropout of training (:mod:`crossrank.models.dropout`): torch's semantics, cheaper
masks. Statistical checks use a million elements, so the bounds are many sigmas wide."""

from __future__ import annotations

import pytest
import torch

from crossrank.models.dropout import LEVELS, Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.02])
def test_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    m = keep_mask((1000, 1001), p, torch.device("cpu"))  # odd count: the last word half-used
    assert m.dtype is torch.bool and m.shape == (1000, 1001)
    n = m.numel()
    keep = 1 - round(p * LEVELS) / LEVELS
    assert abs(m.float().mean().item() - keep) < 6 * (keep * (1 - keep) / n) ** 0.5
    # the two halves of each random word are independent: neighbours' joint rate is keep^2
    flat = m.reshape(-1)[: n // 2 * 2].float()
    both = (flat[0::2] * flat[1::2]).mean().item()
    assert abs(both - keep * keep) < 8 * (keep * keep * (1 - keep * keep) / (n // 2)) ** 0.5


def test_dropout_is_unbiased_and_its_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.ones(1_000_000, requires_grad=True)
    y = dropout(x, 0.1)
    assert abs(y.mean().item() - 1.0) < 3e-3
    kept = y != 0
    scale = LEVELS / (LEVELS - round(0.1 * LEVELS))
    assert torch.equal(y[kept], torch.full_like(y[kept], scale))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * scale)


def test_masks_follow_torch_seed_and_eval_mode_is_the_identity():
    x = torch.randn(64, 384)
    torch.manual_seed(5)
    a = dropout(x, 0.1)
    torch.manual_seed(5)
    b = dropout(x, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, x)
    layer = Dropout(0.1).eval()
    assert layer(x) is x
    assert isinstance(layer, torch.nn.Dropout)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(x, 0.0) is x
