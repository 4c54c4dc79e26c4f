"""Our encoder's internal shortcuts against its own plain path (transformers parity: test_parity)."""

from __future__ import annotations

import pytest
import torch

from crossrank.models import load_cross_encoder


def batch(vocab: int, lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids * mask, mask


@pytest.mark.parametrize("fixture", ["bert_dir", "xlmr_dir"])
@pytest.mark.parametrize("lengths", [[9, 9, 9], [3, 17, 8, 1, 12]])
def test_first_token_last_layer_equals_the_full_layer(fixture, lengths, request):
    """``first_only`` runs the last layer on each sequence's first token: the same logits and
    the same gradients as running it on every token and picking the first rows afterwards."""
    model = load_cross_encoder(request.getfixturevalue(fixture)).eval()
    ids, mask = batch(model.config.vocab_size, lengths)

    def logits(first_only: bool) -> torch.Tensor:
        hidden, layout = model.encoder(ids, mask, first_only=first_only)
        if not first_only:
            hidden = hidden.index_select(0, layout.first)
        return model.head(hidden).squeeze(-1)

    grads = []
    outs = []
    for first_only in (False, True):
        model.zero_grad()
        out = logits(first_only)
        torch.log_softmax(out, 0)[0].backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(outs[0], outs[1], atol=1e-5, rtol=0)
    assert torch.equal(model(ids, mask).detach(), outs[1])  # forward() takes the shortcut
    assert grads[0].keys() == grads[1].keys()
    for name, full in grads[0].items():
        assert torch.allclose(full, grads[1][name], atol=1e-5, rtol=1e-4), name
