"""The one scheduler that owns the model: cross-request batching under a token budget.

A request is tokenized in a thread pool (never on the event loop) into pairs, which join one
FIFO queue shared by all requests. A dedicated inference thread takes pairs from the head of
the queue (a few batches' worth of tokens), waiting at most ``max_wait_ms`` for a batch to
fill, and hands them to the engine's one batch path (:mod:`crossrank.engine.runner`, as
:meth:`Reranker.compute_score`): ``Engine.plan`` scores identical pairs once (across requests
too) in length-sorted batches under ``max_batch_tokens`` padded tokens, ``Engine.score_batch``
runs each (one score per output of the model), skipping pairs of requests dropped meanwhile.
A request's future resolves when its last pair is scored.

Admission is per request and by expected wait: the scheduler measures its own drain rate (a
moving average of the pairs per second of recent batches) and refuses (:class:`Overloaded`,
HTTP 429, ``Retry-After`` from that rate) a request whose pairs would wait longer than
``max_queue_wait`` seconds for the pairs already queued, or that arrives when the queue holds
``max_queued_pairs`` pairs (a second bound). An admitted request is never refused halfway.
A request whose client goes away (its ``score`` call is cancelled) has its queued pairs dropped
at once. On shutdown, :meth:`Scheduler.drain` fails (:class:`Stopped`) the queued requests that
cannot finish in the time left.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from crossrank.engine.chunking import ChunkSpec, EncodedRequest, best_per_document, encode_request
from crossrank.engine.runner import Batch, ScorePlan
from crossrank.server.admission import Admission
from crossrank.server.errors import BackendError, Unavailable
from crossrank.server.metrics import Metrics

logger = logging.getLogger(__name__)

#: the inference thread takes at most this many batches' worth of tokens from the queue at once
WINDOW_BATCHES = 4
#: on shutdown, a request is kept only if it should finish within this share of the time left
DRAIN_MARGIN = 0.8


class Stopped(Unavailable):
    """The scheduler is shutting down (HTTP 503)."""


class SchedulerFault(RuntimeError):
    """The scheduler itself failed on a window of pairs (a bug: HTTP 500)."""


@dataclass(eq=False)
class _Job:
    encoded: EncodedRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    width: int  # scores per pair: the model's outputs
    scores: np.ndarray = field(init=False)
    remaining: int = field(init=False)
    started: bool = False
    dead: bool = False  # cancelled by its client or failed: its pairs are skipped
    in_queue: int = 0  # pairs still in the scheduler's pending queue
    queue_tokens: int = 0  # their tokens

    def __post_init__(self) -> None:
        n = len(self.encoded.pairs)
        self.scores = np.zeros((n, self.width) if self.width > 1 else n, dtype=np.float32)
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
    """:func:`encode_request`: its :class:`~crossrank.errors.InputError` is the client's
    (HTTP 422); any other exception is the server's (HTTP 500). Texts reach it as valid
    Unicode under the length limit (the routes check them)."""
    return encode_request(pt, query, texts, spec)


class Scheduler:
    """Batches the pairs of concurrent requests through one reranker.

    Args:
        reranker: a loaded :class:`~crossrank.Reranker` (its tokenizer and engine are used).
        metrics: where batch sizes, durations and the queue depth are recorded.
        max_batch_tokens: padded-token budget of one forward pass (default: the engine's).
        max_wait_ms: longest the oldest queued pair waits for its batch to fill.
        max_queued_pairs: queue depth from which new requests are refused.
        max_queue_wait: refuse a request whose pairs would wait longer than this (seconds).
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
        max_queue_wait: float = 20.0,
        tokenizer_workers: int = 2,
    ) -> None:
        self.reranker = reranker
        self.metrics = metrics
        self.engine = reranker.engine
        self.max_batch_tokens = max_batch_tokens or self.engine.max_tokens
        self.max_batch_pairs = self.engine.batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._pool = ThreadPoolExecutor(tokenizer_workers, thread_name_prefix="crossrank-tokenize")
        self._cond = threading.Condition()
        self._pending: deque[tuple[_Job, int]] = deque()
        self._pending_tokens = 0
        self._queued = 0  # pairs admitted (reserved or queued) and not yet scored
        self.admission = Admission(max_queue_wait, max_queued_pairs)
        self._stop = False
        self._draining = False
        self._reserved = 0  # pairs admitted and still being tokenized (part of _queued)
        self._drain_room = 0.0  # on shutdown: pairs that can still be scored in time
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

    @property
    def rate(self) -> float:
        """Measured pairs per second (moving average of recent batches; 0 before any)."""
        return self.admission.rate

    async def score(
        self, query: str, texts: Sequence[str], spec: ChunkSpec
    ) -> tuple[np.ndarray, int]:
        """Logits of each text against ``query`` (best chunk per text) and the tokens scored:
        ``[n_texts]``, or ``[n_texts, n_outputs]`` for a model with several outputs (cutoff
        layers).

        Raises :class:`Overloaded` when the request would wait too long, :class:`BackendError`
        when the model fails, :class:`Stopped` on shutdown, and the input errors of
        :func:`encode_request`. Cancelling the call drops the request's queued pairs.
        """
        reserve = len(texts) * spec.max_chunks_per_doc
        with self._cond:
            if self._stop or self._draining:
                raise Stopped("the server is shutting down")
            refusal = self.admission.refusal(self._queued)
            if refusal is not None:
                self.metrics.rejected.inc()
                raise refusal
            self._queued += reserve
            self._reserved += reserve
        self.metrics.queue_pairs.set(self._queued)
        loop = asyncio.get_running_loop()
        job: _Job | None = None
        try:
            t0 = time.perf_counter()
            encoded = await loop.run_in_executor(
                self._pool, _encode, self.reranker.tokenizer, query, texts, spec
            )
            self.metrics.tokenize_duration.observe(time.perf_counter() - t0)
            if not encoded.pairs:
                return np.zeros(0, dtype=np.float32), 0
            width = self.engine.backend.n_outputs
            job = _Job(encoded, loop.create_future(), loop, time.monotonic(), width)
            with self._cond:
                if self._stop or (self._draining and len(encoded.pairs) > self._drain_room):
                    raise Stopped(
                        "the server is shutting down and this request could not finish in time"
                    )
                if self._draining:  # admitted before the shutdown, and there is time for it
                    self._drain_room -= len(encoded.pairs)
                self._queued += len(encoded.pairs) - reserve
                self._reserved -= reserve
                reserve = 0  # the inference thread now releases these pairs as it scores them
                for i, pair in enumerate(encoded.pairs):
                    self._pending.append((job, i))
                    self._pending_tokens += len(pair)
                job.in_queue = len(encoded.pairs)
                job.queue_tokens = sum(len(p) for p in encoded.pairs)
                self._cond.notify()
            try:
                scores = await job.future
            except asyncio.CancelledError:
                self._drop(job)  # the client went away: its pairs are never scored
                raise
        finally:
            if reserve:
                with self._cond:
                    self._queued -= reserve
                    self._reserved -= reserve
            self.metrics.queue_pairs.set(self._queued)
        return best_per_document(scores, encoded.doc_of, encoded.n_docs), encoded.n_tokens

    def _drop(self, job: _Job) -> None:
        """Forget the queued pairs of ``job`` now (they are skipped when reached)."""
        with self._cond:
            self._drop_locked(job)
        self.metrics.queue_pairs.set(self._queued)

    def _drop_locked(self, job: _Job) -> None:
        if job.dead:
            return
        job.dead = True
        self.metrics.dropped.inc(job.in_queue)
        self._queued -= job.in_queue
        self._pending_tokens -= job.queue_tokens
        job.in_queue = job.queue_tokens = 0

    def drain(self, seconds: float) -> int:
        """Shutting down with ``seconds`` left: refuse new requests, fail (:class:`Stopped`) the
        queued ones that would not finish in time at the measured rate, and let those still
        being tokenized in while there is time for them; returns how many failed now."""
        failed = []
        with self._cond:
            self._draining = True
            seen: set[_Job] = set()
            rate = self.admission.rate
            budget = seconds * DRAIN_MARGIN * rate if rate > 0 else float("inf")
            # pairs already taken by the inference thread come first
            live = sum(job.in_queue for job in self._live_jobs())
            ahead = self._queued - self._reserved - live
            for job, _ in self._pending:  # FIFO: a request finishes after those before it
                if job.dead or job in seen:
                    continue
                seen.add(job)
                n = job.in_queue
                ahead += n
                if ahead > budget:  # it would not finish: its pairs leave the line
                    self._drop_locked(job)
                    failed.append(job)
                    ahead -= n
            self._drain_room = budget - ahead
        error = Stopped("the server is shutting down and this request could not finish in time")
        for job in failed:
            _resolve(job, error=error)
        if failed:
            logger.warning("shutting down: %d queued requests answered 503", len(failed))
        self.metrics.queue_pairs.set(self._queued)
        return len(failed)

    def _live_jobs(self) -> set[_Job]:
        return {job for job, _ in self._pending if not job.dead}

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
                except Exception as exc:  # a bug: never leave a request waiting forever
                    logger.exception("the scheduler failed on %d pairs", len(window))
                    error = SchedulerFault(f"scheduler error: {type(exc).__name__}: {exc}")
                    self._fail(dict.fromkeys(job for job, _ in window), error)

    def _fail(self, jobs: Iterable[_Job], error: BaseException) -> None:
        jobs = list(jobs)
        with self._cond:
            for job in jobs:
                self._drop_locked(job)
        for job in jobs:
            _resolve(job, error=error)

    def _take(self) -> list[tuple[_Job, int]]:
        """Pop pairs from the head of the queue, up to a few batches' worth of tokens."""
        budget = self.max_batch_tokens * WINDOW_BATCHES
        taken: list[tuple[_Job, int]] = []
        tokens = 0
        while self._pending and tokens < budget:
            job, i = self._pending.popleft()
            if job.dead:  # dropped: already out of the counts
                continue
            n = len(job.encoded.pairs[i])
            self._pending_tokens -= n
            job.in_queue -= 1
            job.queue_tokens -= n
            taken.append((job, i))
            tokens += n
        return taken

    def _process(self, window: list[tuple[_Job, int]]) -> None:
        m = self.metrics
        self.max_batch_tokens = min(self.max_batch_tokens, self.engine.max_tokens)
        plan = self.engine.plan(
            [job.encoded.pairs[i] for job, i in window],
            max_tokens=self.max_batch_tokens,
            batch_size=self.max_batch_pairs,
        )
        for batch in plan.batches:
            live = np.asarray([r for r in batch.rows if not window[r][0].dead], dtype=np.int64)
            if len(live) < len(batch.rows):  # taken from the queue, then their request dropped
                m.dropped.inc(len(batch.rows) - len(live))
            settled: list[tuple[_Job, object, BaseException | None]] = []
            try:
                if len(live):
                    settled = self._score_batch(window, plan, batch, live, m)
            finally:
                with self._cond:
                    self._queued -= len(batch.rows)
                m.queue_pairs.set(self._queued)
            for job, result, error in settled:  # answer once the queue count is released
                _resolve(job, result, error)

    def _score_batch(
        self,
        window: list[tuple[_Job, int]],
        plan: ScorePlan,
        batch: Batch,
        rows: np.ndarray,
        m: Metrics,
    ) -> list[tuple[_Job, object, BaseException | None]]:
        """Score the window's pairs ``rows`` (of one planned batch); returns the requests it
        completed (or failed)."""
        now = time.monotonic()
        jobs = list(dict.fromkeys(window[r][0] for r in rows))
        for job in jobs:
            if not job.started:
                job.started = True
                m.queue_duration.observe(now - job.enqueued)
        t0 = time.perf_counter()
        try:
            scored = self.engine.score_batch(plan, batch, rows)
        except Exception as exc:
            logger.exception("scoring a batch of %d pairs failed", len(rows))
            error = BackendError(f"model error: {type(exc).__name__}: {exc}")
            with self._cond:
                for job in jobs:
                    self._drop_locked(job)
            return [(job, None, error) for job in jobs]
        elapsed = max(time.perf_counter() - t0, 1e-6)
        m.inference_duration.observe(elapsed)
        m.batch_pairs.observe(scored.pairs)
        m.batch_tokens.observe(scored.tokens)
        m.batch_requests.observe(len(jobs))
        m.pairs.inc(len(rows))
        self.admission.measure(len(rows), elapsed)
        m.drain_rate.set(self.admission.rate)
        done = []
        for r, score in zip(scored.rows, scored.scores):
            job, i = window[r]
            job.scores[i] = score
            job.remaining -= 1
            if job.remaining == 0:
                done.append((job, job.scores, None))
        return done
