"""The decoder layers' pieces (crossrank.models.decoder_layers): the packing of a padded batch."""

from __future__ import annotations

import torch

from crossrank.models.decoder_layers import Packing, from_heads, to_heads


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
