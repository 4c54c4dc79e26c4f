"""Device pool: small jobs stay on the first device, big jobs use every replica, same scores."""

from __future__ import annotations

import threading

import numpy as np

from crossrank import Reranker
from crossrank.engine.pool import DevicePool


def pairs(n: int) -> list[list[str]]:
    words = [
        "the",
        "giant",
        "panda",
        "is",
        "a",
        "bear",
        "species",
        "endemic",
        "to",
        "china",
        "debian",
        "free",
        "system",
    ]
    # distinct passages (identical pairs would be scored once, making the job smaller)
    extra = [[words[(i // 12) % 13], words[(i // 156) % 13]] for i in range(n)]
    return [[words[i % 5], " ".join(words[: 2 + i % 12] + extra[i])] for i in range(n)]


def count_calls(pool: DevicePool) -> dict[int, set[str]]:
    """Wrap each replica's score to record which threads used it."""
    seen: dict[int, set[str]] = {}
    for i, rep in enumerate(pool.replicas):
        original = rep.score

        def wrapped(batch, i=i, original=original):
            seen.setdefault(i, set()).add(threading.current_thread().name)
            return original(batch)

        rep.score = wrapped
    return seen


def test_small_jobs_stay_on_the_first_device(bert_dir):
    rr = Reranker(bert_dir, devices=["cpu", "cpu"], max_batch_tokens=64)
    assert isinstance(rr.backend, DevicePool)
    assert rr.device.type == "cpu"
    ref = Reranker(bert_dir, device="cpu", max_batch_tokens=64).compute_score(pairs(40))
    got = rr.compute_score(pairs(40))
    assert len(rr.backend.replicas) == 1  # below min_pairs: no replica loaded
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_big_jobs_spread_over_replicas(bert_dir):
    rr = Reranker(bert_dir, devices=["cpu", "cpu"], max_batch_tokens=64)
    rr.backend.min_pairs = 100
    data = pairs(300)
    ref = Reranker(bert_dir, device="cpu").compute_score(data)
    assert rr.backend.workers_for(300, 30) == 2
    assert len(rr.backend.replicas) == 2
    seen = count_calls(rr.backend)
    got = rr.compute_score(data)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert set(seen) == {0, 1}, "both replicas should have scored batches"
    assert all(name.startswith("crossrank") for names in seen.values() for name in names)
