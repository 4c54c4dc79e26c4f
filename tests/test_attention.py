"""Packed variable-length attention: layout bookkeeping and packed-vs-padded equivalence (CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossrank.models import load_cross_encoder
from crossrank.models.attention import grouped_varlen, select_kernel
from crossrank.models.encoder import PackedLayout

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

LENGTHS = [5, 3, 4, 3, 1]


def mask_for(lengths: list[int]) -> torch.Tensor:
    seq = max(lengths)
    return (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()


def test_layout_offsets_and_groups():
    layout = PackedLayout(mask_for(LENGTHS))
    assert layout.cu_seqlens.tolist() == [0, 5, 8, 12, 15, 16]
    assert layout.cu_seqlens.dtype == torch.int32
    assert layout.max_seqlen == 5 and layout.n_tokens == 16
    assert layout.first.tolist() == [0, 5, 8, 12, 15]
    groups = {n: rows.tolist() for n, rows in layout.length_groups()}
    assert groups == {
        1: [[15]],
        3: [[5, 6, 7], [12, 13, 14]],
        4: [[8, 9, 10, 11]],
        5: [[0, 1, 2, 3, 4]],
    }


def test_pack_unpack_roundtrip():
    layout = PackedLayout(mask_for(LENGTHS))
    padded = torch.randn(len(LENGTHS) * max(LENGTHS), 7)
    packed = layout.pack(padded)
    assert packed.shape == (16, 7)
    back = layout.unpack(packed)
    keep = mask_for(LENGTHS).reshape(-1).bool()
    assert torch.equal(back[keep], padded[keep])
    assert torch.count_nonzero(back[~keep]) == 0
    assert torch.equal(layout.pack(back), packed)


def test_grouped_kernel_equals_per_sequence_attention():
    torch.manual_seed(0)
    layout = PackedLayout(mask_for(LENGTHS))
    q, k, v = (torch.randn(16, 2, 8) for _ in range(3))
    got = grouped_varlen(q, k, v, layout)
    cu = layout.cu_seqlens.tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        ref = F.scaled_dot_product_attention(
            q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1)
        ).transpose(0, 1)
        torch.testing.assert_close(got[s:e], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["bert_dir", "xlmr_dir"])
def test_packed_forward_equals_padded(fixture, request):
    model = load_cross_encoder(request.getfixturevalue(fixture))
    torch.manual_seed(1)
    lengths = [30, 17, 17, 9, 4, 2]
    mask = mask_for(lengths)
    ids = torch.randint(5, model.config.vocab_size, mask.shape) * mask
    ids = ids + (1 - mask) * model.config.pad_token_id
    types = None
    if model.config.type_vocab_size > 1:
        types = (torch.arange(mask.shape[1])[None, :] >= 3).long() * mask
    with torch.inference_mode():
        model.encoder.attention = "padded"
        padded = model(ids, mask, types)
        model.encoder.attention = "grouped"
        packed = model(ids, mask, types)
    assert padded.std() > 0.05
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)


def test_kernel_selection_on_cpu():
    cpu = torch.device("cpu")
    assert select_kernel("auto", cpu, torch.float32) is None
    assert select_kernel("auto", cpu, torch.bfloat16) is None  # CPU: padded path
    assert select_kernel("padded", cpu, torch.float32) is None
    assert select_kernel("grouped", cpu, torch.float32) is grouped_varlen
    with pytest.raises(ValueError, match="needs CUDA"):
        select_kernel("flash", cpu, torch.float16)
    with pytest.raises(ValueError, match="needs CUDA"):
        select_kernel("torch-varlen", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown attention kernel"):
        select_kernel("xformers", cpu, torch.float32)
