"""Streaming scoring: scores for an iterable of pairs of any length, in bounded memory.

:func:`score_stream` pulls ``chunk_size`` pairs at a time from its input, scores the chunk
with one ``compute_score`` call (the engine sorts the pairs of a chunk by length and batches
them under its token budget) and yields the scores in input order before it reads on. Memory
stays bounded by the chunk, whatever the input size; ``crossrank score`` writes each chunk's
results as soon as they exist.

The chunk size trades speed for memory and latency: length-sorting only happens within a
chunk, so small chunks pad more (docs/performance.md has the measurements).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Protocol

from crossrank.errors import InputError
from crossrank.progress import bar as progress_bar
from crossrank.progress import on_batches

logger = logging.getLogger(__name__)

#: pairs scored per call by default: large enough that sorting by length within a chunk gets
#: almost all of the speed of sorting the whole input (docs/performance.md), small enough
#: that a chunk's texts and tokens take a few MB
DEFAULT_CHUNK_SIZE = 4096


class PairScorer(Protocol):
    """What :func:`score_stream` needs: a :class:`~crossrank.Reranker`'s ``compute_score``."""

    def compute_score(self, pairs: Sequence[Sequence[str]], **kwargs: Any) -> list[Any]: ...


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter), read lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def score_stream(
    reranker: PairScorer,
    pairs: Iterable[Sequence[str]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    show_progress: bool | None = None,
    total: int | None = None,
    summary: bool = True,
    **score_kwargs: Any,
) -> Iterator[Any]:
    """Yield the score of each ``(query, passage)`` pair of ``pairs``, in input order.

    ``pairs`` may be any iterable, a generator reading a file included: it is consumed
    ``chunk_size`` pairs at a time, so memory does not grow with the input. Each chunk is one
    ``reranker.compute_score(chunk, **score_kwargs)`` call. A tqdm progress bar counts the
    pairs, moving after each batch the engine scores (``show_progress``: None shows it when
    stderr is a terminal, :mod:`crossrank.progress`; ``total`` gives it an end), and with ``summary`` a line (pairs, seconds, pairs/s) is logged at INFO level on
    ``crossrank.scoring`` when the input is exhausted.

    Raises:
        InputError: ``chunk_size`` is not positive.

    Example:
        >>> rr = Reranker("crossrank/minilm-debian")  # doctest: +SKIP
        >>> pairs = ((row["q"], row["p"]) for row in rows)  # doctest: +SKIP
        >>> for score in score_stream(rr, pairs, chunk_size=1024):  # doctest: +SKIP
        ...     print(score)
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    bar = progress_bar(show=show_progress, total=total, unit="pair", desc="scoring")
    start, n = time.perf_counter(), 0
    try:
        for chunk in chunks(pairs, chunk_size):
            base = n

            def moved(done: int, of: int, base: int = base, size: int = len(chunk)) -> None:
                # the chunk's share of the engine's batches, in input pairs (windows of long
                # documents and duplicates count as their pairs)
                bar.update(base + size * done // max(of, 1) - bar.n)

            with on_batches(moved):
                scores = reranker.compute_score(chunk, **score_kwargs)
            n += len(chunk)
            bar.update(n - bar.n)
            yield from scores
    finally:
        bar.close()
    if summary:
        log_summary(n, time.perf_counter() - start, chunk_size)


def log_summary(n: int, seconds: float, chunk_size: int, where: str = "") -> None:
    """The summary line of a scoring job, at INFO level on ``crossrank.scoring``."""
    logger.info(
        "scored %d pairs%s in %.1f s (%.1f pairs/s, chunks of %d)",
        n,
        where,
        seconds,
        n / seconds if seconds > 0 else 0.0,
        chunk_size,
    )
