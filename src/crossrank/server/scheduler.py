"""The one scheduler that owns the model: cross-request batching under a token budget.

A request is tokenized in a thread pool (never on the event loop) into pairs, which join one
FIFO queue shared by all requests. A dedicated inference thread takes pairs from the head of
the queue, waits at most ``max_wait_ms`` for a batch to fill, sorts what it took by length and
packs it into batches under ``max_batch_tokens`` padded tokens with the core's
:func:`~crossrank.engine.batching.plan_batches`, and scores each batch through the reranker's
engine (the same collate / backend / out-of-memory path as :meth:`Reranker.compute_score`).
A request's future resolves when its last pair is scored.

Admission is per request: a request is refused (:class:`Overloaded`, HTTP 429) only when the
queue already holds ``max_queued_pairs`` pairs; an admitted request is never refused halfway.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from crossrank.engine.batching import plan_batches
from crossrank.errors import InputError
from crossrank.server.chunking import ChunkSpec, EncodedRequest, best_per_document, encode_request
from crossrank.server.metrics import Metrics

logger = logging.getLogger(__name__)

#: the inference thread takes at most this many batches' worth of tokens from the queue at once
WINDOW_BATCHES = 4


class Overloaded(Exception):
    """The queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, queued: int, retry_after: int) -> None:
        super().__init__(f"server overloaded: {queued} pairs queued; retry in {retry_after} s")
        self.retry_after = retry_after


class BackendError(Exception):
    """The model failed on a batch (not the client's fault)."""


class Stopped(Exception):
    """The scheduler is shutting down."""


@dataclass(eq=False)
class _Job:
    encoded: EncodedRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    scores: np.ndarray = field(init=False)
    remaining: int = field(init=False)
    started: bool = False
    dead: bool = False  # cancelled by its client or failed: its pairs are skipped

    def __post_init__(self) -> None:
        self.scores = np.zeros(len(self.encoded.pairs), dtype=np.float32)
        self.remaining = len(self.encoded.pairs)


def _resolve(job: _Job, result: object = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the event loop is closed: nobody waits any more
        pass


def _encode(pt, query: str, texts: Sequence[str], spec: ChunkSpec) -> EncodedRequest:
    """:func:`encode_request`, with the tokenizer's own failures reported as input errors."""
    try:
        return encode_request(pt, query, texts, spec)
    except InputError:
        raise
    except Exception as exc:  # e.g. lone surrogates the tokenizer cannot take
        raise InputError(f"cannot tokenize the input: {exc}") from None


class Scheduler:
    """Batches the pairs of concurrent requests through one reranker.

    Args:
        reranker: a loaded :class:`~crossrank.Reranker` (its tokenizer and engine are used).
        metrics: where batch sizes, durations and the queue depth are recorded.
        max_batch_tokens: padded-token budget of one forward pass (default: the engine's).
        max_wait_ms: longest the oldest queued pair waits for its batch to fill.
        max_queued_pairs: queue depth from which new requests are refused.
        tokenizer_workers: threads tokenizing requests.

    Example:
        >>> sched = Scheduler(reranker, Metrics()); sched.start()  # doctest: +SKIP
        >>> logits, tokens = await sched.score("q", ["a", "b"], ChunkSpec())  # doctest: +SKIP
    """

    def __init__(
        self,
        reranker,
        metrics: Metrics,
        *,
        max_batch_tokens: int | None = None,
        max_wait_ms: float = 5.0,
        max_queued_pairs: int = 10000,
        tokenizer_workers: int = 2,
    ) -> None:
        self.reranker = reranker
        self.metrics = metrics
        self.engine = reranker.engine
        self.max_batch_tokens = max_batch_tokens or self.engine.max_tokens
        self.max_batch_pairs = self.engine.batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self._pool = ThreadPoolExecutor(tokenizer_workers, thread_name_prefix="crossrank-tokenize")
        self._cond = threading.Condition()
        self._pending: deque[tuple[_Job, int]] = deque()
        self._pending_tokens = 0
        self._queued = 0  # pairs admitted (reserved or queued) and not yet scored
        self._rate = 0.0  # pairs per second, moving average
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="crossrank-inference", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Score what is queued, then stop the inference thread and the tokenizer pool."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        return self._queued

    # -- requests ------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's drain time, 1 to 60."""
        if self._rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._queued / self._rate))))

    async def score(
        self, query: str, texts: Sequence[str], spec: ChunkSpec
    ) -> tuple[np.ndarray, int]:
        """Logits of each text against ``query`` (best chunk per text) and the tokens scored.

        Raises :class:`Overloaded` when the queue is full, :class:`BackendError` when the
        model fails, and the input errors of :func:`encode_request`.
        """
        reserve = len(texts) * spec.max_chunks
        with self._cond:
            if self._stop:
                raise Stopped("the server is shutting down")
            if self._queued >= self.max_queued_pairs:
                self.metrics.rejected.inc()
                raise Overloaded(self._queued, self.retry_after())
            self._queued += reserve
        self.metrics.queue_pairs.set(self._queued)
        loop = asyncio.get_running_loop()
        try:
            t0 = time.perf_counter()
            encoded = await loop.run_in_executor(
                self._pool, _encode, self.reranker.tokenizer, query, texts, spec
            )
            self.metrics.tokenize_duration.observe(time.perf_counter() - t0)
            if not encoded.pairs:
                return np.zeros(0, dtype=np.float32), 0
            job = _Job(encoded, loop.create_future(), loop, time.monotonic())
            with self._cond:
                self._queued += len(encoded.pairs) - reserve
                reserve = 0  # the inference thread now releases these pairs as it scores them
                for i, pair in enumerate(encoded.pairs):
                    self._pending.append((job, i))
                    self._pending_tokens += len(pair)
                self._cond.notify()
            try:
                scores = await job.future
            except asyncio.CancelledError:
                job.dead = True  # the client went away: skip its remaining pairs
                raise
        finally:
            if reserve:
                with self._cond:
                    self._queued -= reserve
            self.metrics.queue_pairs.set(self._queued)
        return best_per_document(scores, encoded.doc_of, encoded.n_docs), encoded.n_tokens

    # -- inference thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending:
                    return  # stopping, and the queue is drained
                deadline = self._pending[0][0].enqueued + self.max_wait
                while not self._stop and self._pending_tokens < self.max_batch_tokens:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                window = self._take()
            if window:
                try:
                    self._process(window)
                except Exception as exc:  # never leave a request waiting forever
                    logger.exception("the scheduler failed on %d pairs", len(window))
                    error = BackendError(f"scheduler error: {type(exc).__name__}: {exc}")
                    for job in dict.fromkeys(job for job, _ in window):
                        job.dead = True
                        _resolve(job, error=error)

    def _take(self) -> list[tuple[_Job, int]]:
        """Pop pairs from the head of the queue, up to a few batches' worth of tokens."""
        budget = self.max_batch_tokens * WINDOW_BATCHES
        taken: list[tuple[_Job, int]] = []
        tokens = dropped = 0
        while self._pending and tokens < budget:
            job, i = self._pending.popleft()
            n = len(job.encoded.pairs[i])
            self._pending_tokens -= n
            if job.dead:
                dropped += 1
                continue
            taken.append((job, i))
            tokens += n
        self._queued -= dropped
        return taken

    def _process(self, window: list[tuple[_Job, int]]) -> None:
        m = self.metrics
        lengths = [len(job.encoded.pairs[i]) for job, i in window]
        self.max_batch_tokens = min(self.max_batch_tokens, self.engine.max_tokens)
        for idx in plan_batches(
            lengths, max_tokens=self.max_batch_tokens, max_pairs=self.max_batch_pairs
        ):
            items = [window[k] for k in idx if not window[k][0].dead]
            settled: list[tuple[_Job, object, BaseException | None]] = []
            try:
                if items:
                    settled = self._score_batch(items, m)
            finally:
                with self._cond:
                    self._queued -= len(idx)
                m.queue_pairs.set(self._queued)
            for job, result, error in settled:  # answer once the queue count is released
                _resolve(job, result, error)

    def _score_batch(
        self, items: list[tuple[_Job, int]], m: Metrics
    ) -> list[tuple[_Job, object, BaseException | None]]:
        """Score one batch; returns the requests it completed (or failed)."""
        now = time.monotonic()
        jobs = list(dict.fromkeys(job for job, _ in items))
        for job in jobs:
            if not job.started:
                job.started = True
                m.queue_duration.observe(now - job.enqueued)
        pairs = [job.encoded.pairs[i] for job, i in items]
        out = np.zeros(len(pairs), dtype=np.float32)
        t0 = time.perf_counter()
        try:
            # the engine's own batch path: collate + backend.score, halving on out-of-memory
            self.engine.score_into(pairs, np.arange(len(pairs)), out)
        except Exception as exc:
            logger.exception("scoring a batch of %d pairs failed", len(pairs))
            error = BackendError(f"model error: {type(exc).__name__}: {exc}")
            for job in jobs:
                job.dead = True
            return [(job, None, error) for job in jobs]
        elapsed = time.perf_counter() - t0
        m.inference_duration.observe(elapsed)
        m.batch_pairs.observe(len(pairs))
        m.batch_tokens.observe(len(pairs) * max(len(p) for p in pairs))
        m.batch_requests.observe(len(jobs))
        m.pairs.inc(len(pairs))
        rate = len(pairs) / max(elapsed, 1e-6)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        done = []
        for (job, i), score in zip(items, out):
            job.scores[i] = score
            job.remaining -= 1
            if job.remaining == 0:
                done.append((job, job.scores, None))
        return done
