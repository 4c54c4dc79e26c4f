"""The decoder layers' pieces (crossrank.models.decoder_layers): GELU-tanh in its compiled form,
attention with bf16 products against PyTorch's SDPA, and the packing of a padded batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossrank.models.decoder_layers import (
    Packing,
    activation,
    attend_in,
    from_heads,
    gelu_tanh_by_exp,
    to_heads,
)


def test_gelu_by_exp_is_gelu_tanh():
    x = torch.cat((torch.linspace(-12, 12, 100_001), torch.tensor([-1e4, -90.0, 90.0, 1e4])))
    ref = F.gelu(x.double(), approximate="tanh")
    got = gelu_tanh_by_exp(x).double()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() < 2e-6
    assert activation("gelu_pytorch_tanh", compiled=True) is gelu_tanh_by_exp
    assert activation("silu", compiled=True) is activation("silu")


def _sdpa(q, k, v, mask):
    groups = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=groups > 1
    )


@pytest.mark.parametrize("heads, kv", [(4, 4), (4, 2), (8, 1)])
@pytest.mark.parametrize("prefix", [False, True])
def test_attend_in_equals_sdpa(heads, kv, prefix):
    """In fp32 the stacked-heads attention is SDPA's (causal, or with a prefix mask); in bf16
    it stays within bf16's rounding of it."""
    torch.manual_seed(0)
    b, n, d = 3, 7, 16
    s = n + (5 if prefix else 0)
    q = torch.randn(b, heads, n, d)
    k, v = torch.randn(b, kv, s, d), torch.randn(b, kv, s, d)
    mask = None
    if prefix:  # row i sees its first i + 2 prefix keys, then its own keys causally
        seen = torch.arange(5)[None, :] < torch.arange(2, 2 + b)[:, None]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        mask = torch.cat((seen[:, None, :].expand(b, n, 5), causal.expand(b, n, n)), dim=2)
        mask = mask[:, None]
    ref = _sdpa(q, k, v, mask)
    scale = d**-0.5
    torch.testing.assert_close(attend_in(torch.float32, q, k, v, mask, scale), ref)
    low = attend_in(torch.bfloat16, q, k, v, mask, scale)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05


def test_packing_round_trip():
    """Packed tokens go to the padded heads layout (zeros at pads) and back."""
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    packing = Packing.of(mask)
    assert packing.index.tolist() == [0, 1, 2, 4, 5, 8, 9, 10, 11]
    x = torch.randn(9, 2, 3)
    heads = to_heads(packing, x)
    assert heads.shape == (3, 2, 4, 3)
    assert torch.equal(heads[0, :, 3], torch.zeros(2, 3))
    assert torch.equal(heads[1, :, :2].transpose(0, 1), x[3:5])
    assert torch.equal(from_heads(packing, heads), x.reshape(9, 6))
