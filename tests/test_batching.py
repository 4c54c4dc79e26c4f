from __future__ import annotations

import numpy as np

from crossrank.engine.batching import collate, plan_batches
from crossrank.engine.tokenize import EncodedPair


def test_plan_batches_respects_budget_and_covers_all():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 300, size=500)
    batches = plan_batches(lengths, max_tokens=2048)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        assert len(b) * lengths[b].max() <= 2048
    # longest first: each batch's longest is no longer than the previous batch's shortest
    for prev, cur in zip(batches, batches[1:]):
        assert lengths[cur].max() <= lengths[prev].min()


def test_plan_batches_caps_pairs_and_gives_overlong_items_their_own_batch():
    batches = plan_batches([10, 10, 10, 10, 5000], max_tokens=100, max_pairs=3)
    assert [b.tolist() for b in batches] == [[4], [0, 1, 2], [3]]


def test_collate_pads_right():
    batch = collate([EncodedPair([5, 6, 7], [0, 0, 1]), EncodedPair([8], [0])], pad_id=1)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.token_type_ids.tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch.n_tokens == 4
    assert collate([EncodedPair([1, 2])], pad_id=0).token_type_ids is None
