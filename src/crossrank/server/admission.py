"""Admission by expected wait: the scheduler's measured drain rate and the 429 decision."""

from __future__ import annotations

import math

from crossrank.server.errors import Overloaded

#: time constant (seconds of scoring) of the moving average of the drain rate
RATE_TAU = 5.0
#: the longest Retry-After given, in seconds
MAX_RETRY_AFTER = 600


class Admission:
    """Decides whether a new request may join a queue of ``queued`` pairs.

    A request is refused when the pairs already queued would take longer than ``max_wait``
    seconds at the measured rate, or when ``max_pairs`` pairs are queued (a second bound, the
    only one before the first batch is measured). ``Retry-After`` is the time until the queue
    has drained enough for the request to be admitted.

    Example:
        >>> a = Admission(max_wait=2.0, max_pairs=1000)
        >>> a.measure(pairs=100, elapsed=1.0)  # one batch: 100 pairs/s
        >>> a.refusal(queued=150) is None, a.refusal(queued=500).retry_after
        (True, 3)
    """

    def __init__(self, max_wait: float, max_pairs: int) -> None:
        self.max_wait = max_wait
        self.max_pairs = max_pairs
        self.rate = 0.0  # pairs per second, moving average (0: not measured yet)

    def measure(self, pairs: int, elapsed: float) -> None:
        """Fold one batch into the rate: a moving average over about RATE_TAU s of scoring."""
        rate = pairs / max(elapsed, 1e-6)
        if self.rate == 0:
            self.rate = rate
        else:
            self.rate += (1.0 - math.exp(-elapsed / RATE_TAU)) * (rate - self.rate)

    def expected_wait(self, queued: int) -> float:
        """Seconds a new request would wait for ``queued`` pairs (0 while the rate is unknown)."""
        return queued / self.rate if self.rate > 0 else 0.0

    def refusal(self, queued: int) -> Overloaded | None:
        """Why a new request cannot be admitted now (None: it can)."""
        if queued >= self.max_pairs:
            wait = queued / self.rate if self.rate > 0 else 1.0
            reason = f"{queued} pairs queued (at most {self.max_pairs})"
        else:
            wait = self.expected_wait(queued)
            if wait <= self.max_wait:
                return None
            reason = (
                f"{queued} pairs queued at {self.rate:.0f} pairs/s: this request would wait "
                f"{wait:.0f} s (at most {self.max_wait:g})"
            )
            wait -= self.max_wait  # until enough of the queue has drained for it to fit
        retry = int(min(MAX_RETRY_AFTER, max(1, math.ceil(wait))))
        return Overloaded(f"server overloaded: {reason}; retry in {retry} s", retry)
