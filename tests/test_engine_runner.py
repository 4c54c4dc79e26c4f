"""The engine's one batch-scoring path: plan (distinct inputs, batches), score a batch (all of
its rows or some), several outputs per pair, out-of-memory halving."""

from __future__ import annotations

import numpy as np
import torch

from crossrank.engine.runner import Engine
from crossrank.engine.tokenize import EncodedPair


class SumBackend:
    """Scores a row by the sum of its token ids (times 1, 2, ... per output); counts rows."""

    name = "sum"
    device = torch.device("cpu")
    model = None

    def __init__(self, n_outputs: int = 1, oom_above: int | None = None) -> None:
        self.n_outputs = n_outputs
        self.oom_above = oom_above
        self.rows = 0

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        return 1

    def score(self, batch) -> np.ndarray:
        if self.oom_above is not None and batch.shape[0] > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.rows += batch.shape[0]
        total = (batch.input_ids * batch.attention_mask).sum(1).float().numpy()
        if self.n_outputs == 1:
            return total
        return np.stack([total * (k + 1) for k in range(self.n_outputs)], axis=1)


def pairs(*lengths_and_seeds: tuple[int, int]) -> list[EncodedPair]:
    return [EncodedPair(list(range(seed, seed + n)), None) for n, seed in lengths_and_seeds]


def want(encoded: list[EncodedPair], width: int = 1) -> np.ndarray:
    total = np.array([sum(e.ids) for e in encoded], dtype=np.float32)
    return total if width == 1 else np.stack([total * (k + 1) for k in range(width)], axis=1)


def test_duplicates_are_computed_once_and_answered_everywhere():
    encoded = pairs((3, 1), (5, 2), (3, 1), (7, 4), (5, 2), (3, 1))
    backend = SumBackend()
    engine = Engine(None, backend, pad_id=0, max_tokens=10)
    plan = engine.plan(encoded)
    assert len(plan.distinct) == 3
    assert sorted(np.concatenate([b.rows for b in plan.batches]).tolist()) == list(range(6))
    np.testing.assert_array_equal(engine.score_encoded(encoded), want(encoded))
    assert backend.rows == 3


def test_a_batch_scores_only_the_rows_asked_for():
    encoded = pairs((4, 1), (4, 9), (4, 1), (4, 20))
    backend = SumBackend(n_outputs=2)
    engine = Engine(None, backend, pad_id=0, max_tokens=64)
    plan = engine.plan(encoded)
    (batch,) = plan.batches
    scored = engine.score_batch(plan, batch, np.array([2, 3]))
    assert scored.pairs == 2 and backend.rows == 2  # pair 1 is not needed
    np.testing.assert_array_equal(scored.rows, [2, 3])
    np.testing.assert_array_equal(scored.scores, want([encoded[2], encoded[3]], 2))
    assert scored.tokens == 2 * 4


def test_several_outputs_and_a_lowered_budget():
    encoded = pairs(*((n, n) for n in range(1, 30)))
    engine = Engine(None, SumBackend(n_outputs=3), pad_id=0, max_tokens=64)
    assert all(
        len(b.items) * max(len(encoded[i]) for i in b.items) <= 32
        for b in engine.plan(encoded, max_tokens=32).batches
    )
    layout = [b.items.tolist() for b in engine.plan(encoded).batches]
    assert [b.items.tolist() for b in engine.plan(encoded, max_tokens=10**6).batches] == layout
    np.testing.assert_array_equal(engine.score_encoded(encoded), want(encoded, 3))


def test_out_of_memory_halves_the_batch_and_lowers_the_budget():
    encoded = pairs(*((4, s) for s in range(8)))
    engine = Engine(None, SumBackend(oom_above=2), pad_id=0, max_tokens=64)
    np.testing.assert_array_equal(engine.score_encoded(encoded), want(encoded))
    assert engine.max_tokens < 64
