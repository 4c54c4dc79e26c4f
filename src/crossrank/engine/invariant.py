"""Batch-invariant scoring: a pair's score bitwise the same whatever else is scored with it.

Why scores move with the batch (measured in docs/verifying.md): padded attention reduces over
the batch's longest length; the BLAS and attention kernels pick their code path by the shape
of the product (a batch of 7 rows takes another path than one of 64); and with several threads
they split some reductions (the keys of attention with one query, the inner dimension of
narrow products) across threads, so the thread count changes the order of the additions.

The deterministic mode removes every cause at once: each distinct input is its own forward
pass at its exact length (no padding, no neighbours, no shared query prefix), and that pass
runs on one thread, so every kernel sees shapes that depend on the pair alone and adds in one
fixed order. The cores are used by scoring several pairs at the same time, one per thread
(:func:`score_alone`). The promise is checked by property tests over random batchings and
thread counts for every family (tests/test_invariant.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_lock = threading.Lock()
_users = 0
_threads = 0


@contextmanager
def one_thread_kernels() -> Iterator[int]:
    """Within this context torch's kernels run on one thread (process-wide: torch has no
    per-thread setting that its BLAS honours); yields the thread count it replaced, which is
    restored when the last such context in the process ends."""
    global _users, _threads
    with _lock:
        if _users == 0:
            _threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _users += 1
        threads = _threads
    try:
        yield threads
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_threads)


def score_alone(score_one: Callable[[T], np.ndarray], items: Sequence[T]) -> list[np.ndarray]:
    """``score_one(item)`` for every item, each on one thread, as many at a time as torch had
    threads: the scores do not depend on which items run together or on the thread count."""
    with one_thread_kernels() as threads:
        workers = min(threads, len(items))
        if workers <= 1:
            return [score_one(item) for item in items]
        # fresh threads: torch sets up each new thread with the current (one-thread) setting
        with ThreadPoolExecutor(workers, thread_name_prefix="crossrank-alone") as pool:
            return list(pool.map(score_one, items))
