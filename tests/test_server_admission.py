"""Admission by expected wait: the drain-rate average and the 429 decision."""

from __future__ import annotations

import math

from crossrank.server.admission import RATE_TAU, Admission


def test_rate_is_a_time_weighted_average():
    a = Admission(max_wait=10, max_pairs=10_000)
    assert a.rate == 0 and a.refusal(queued=9_999) is None  # unmeasured: only the pair bound
    a.measure(pairs=100, elapsed=1.0)
    assert a.rate == 100
    a.measure(pairs=50, elapsed=1.0)  # a slower batch pulls the average by 1 - exp(-1/tau)
    w = 1 - math.exp(-1 / RATE_TAU)
    assert math.isclose(a.rate, 100 + w * (50 - 100))


def test_refusal_and_retry_after():
    a = Admission(max_wait=2.0, max_pairs=1000)
    a.measure(pairs=100, elapsed=1.0)
    assert a.refusal(queued=200) is None  # exactly 2 s of wait is admitted
    err = a.refusal(queued=450)  # 4.5 s: wait until 250 pairs drained, 2.5 s -> 3
    assert err is not None and err.retry_after == 3 and err.headers == {"Retry-After": "3"}
    err = a.refusal(queued=1000)  # the pair bound: the whole queue's drain time
    assert err is not None and err.retry_after == 10 and "at most 1000" in err.message
    assert Admission(2.0, 10).refusal(queued=10).retry_after == 1  # unmeasured: 1 s
    slow = Admission(1.0, 10**9)
    slow.measure(pairs=1, elapsed=10.0)
    assert slow.refusal(queued=10**6).retry_after == 600  # capped
