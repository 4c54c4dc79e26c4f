"""What every API route shares: the settings, the model, its scheduler and the rerank call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from crossrank.engine.chunking import ChunkSpec
from crossrank.errors import CrossrankError, InputError
from crossrank.server.errors import ClientGone, EmptyInput, Unavailable
from crossrank.server.metrics import Metrics
from crossrank.server.scheduler import Scheduler
from crossrank.server.settings import ServerSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


def check_text(text: str, what: str) -> None:
    """Refuse (422) a text that is not valid Unicode (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} is not valid Unicode: {exc.reason} at {exc.start}") from None


async def until_disconnect(receive: Any) -> None:
    """Return when the client disconnects (call once the request body has been read).

    ASGI servers answer ``receive()`` with ``http.disconnect`` when the client goes away (or
    once the response is sent, by when nobody waits for this any more).
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def check_servable(reranker: Any) -> None:
    """Refuse (:class:`~crossrank.errors.CrossrankError`) a model with several scores per pair:
    every API answers one score per document, so a layerwise model is served at one cutoff
    layer (``Reranker.compute_layer_scores`` gives several at once)."""
    n = reranker.engine.backend.n_outputs
    if n != 1:
        layers = reranker.cutoff_layers or []
        given = " ".join(map(str, layers)) or f"{n} outputs"
        one = f" (e.g. --cutoff-layers {layers[0]})" if layers else ""
        raise CrossrankError(
            f"--cutoff-layers {given}: the server gives one score per document; serve one "
            f"cutoff layer{one}, or score several with crossrank score or "
            "Reranker.compute_layer_scores"
        )


class Service:
    """The model and its scheduler behind every route; ``/health`` reads ``ready``/``failed``.

    A model with several scores per pair (:func:`check_servable`) is refused here when given,
    and makes :meth:`start` fail when loaded from the settings.
    """

    def __init__(self, settings: ServerSettings, reranker: Any | None) -> None:
        if reranker is not None:
            check_servable(reranker)
        self.settings = settings
        self.metrics = Metrics()
        self.reranker = reranker
        self.scheduler: Scheduler | None = None
        self.ready = False
        #: why the model could not be started (load or warm-up): ``/health`` says "failed" and
        #: ``crossrank serve`` exits
        self.failed: str | None = None
        self.failure: Exception | None = None
        self.stopping = False
        name = settings.served_model_name or settings.model
        if name is None and reranker is not None:
            name = reranker.model_name
        self.model_name = name or "unknown"

    async def start(self) -> None:
        """Load the model (unless given), start the scheduler, warm up; then report ready."""
        s = self.settings
        try:
            if self.reranker is None:
                if s.model is None:
                    raise CrossrankError("no model: pass a Reranker or settings.model")
                from crossrank.reranker import Reranker

                options = {
                    **s.options,
                    "max_batch_tokens": s.max_batch_tokens,
                    "show_progress": False,
                }
                self.reranker = await asyncio.to_thread(Reranker, s.model, **options)
                check_servable(self.reranker)
            self.scheduler = Scheduler(
                self.reranker,
                self.metrics,
                max_batch_tokens=s.max_batch_tokens,
                max_wait_ms=s.max_wait_ms,
                max_queued_pairs=s.max_queued_pairs,
                max_queue_wait=s.max_queue_wait,
                tokenizer_workers=s.tokenizer_workers,
            )
            self.scheduler.start()
            if s.warmup:
                passages = ["warm-up passage", "warm-up passage " * 64]
                await self.scheduler.score("warm-up query", passages, ChunkSpec())
        except Exception as exc:  # reported by /health and the log; crossrank serve exits
            self.failure = exc
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.error("the model could not be started: %s", self.failed)
            return
        self.ready = True
        logger.info("model %s ready", self.model_name)

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived: refuse new work, and answer 503 now to queued requests
        that cannot finish within ``graceful_timeout`` seconds."""
        self.stopping = True
        if self.scheduler is not None:
            self.scheduler.drain(self.settings.graceful_timeout)

    async def close(self) -> None:
        self.ready = False
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.close)

    def spec(
        self,
        *,
        max_chunks_per_doc: int | None = None,
        max_tokens_per_doc: int | None = None,
        truncate: bool | None = None,
        direction: str = "right",
        max_length: int | None = None,
    ) -> ChunkSpec:
        """How a request's documents are fitted to the model, from its options and the settings.

        ``max_length`` caps the pair length below the model's (a larger value is the model's).
        """
        s = self.settings
        if max_chunks_per_doc is None and (s.chunking or max_tokens_per_doc is not None):
            max_chunks_per_doc = s.max_chunks_per_doc
        if max_length is not None and self.reranker is not None:
            max_length = min(max_length, self.reranker.max_length)
        return ChunkSpec(
            max_chunks_per_doc=min(max_chunks_per_doc or 1, s.max_chunks_per_doc),
            chunk_overlap=s.chunk_overlap,
            max_tokens_per_doc=max_tokens_per_doc,
            direction=direction,
            truncate=truncate is not False,
            max_length=max_length,
        )

    async def rerank(
        self, receive: Any, query: str, texts: Sequence[str], spec: ChunkSpec
    ) -> tuple[Any, int]:
        """Logits per text (best chunk) and the tokens scored.

        ``receive`` is the request's ASGI receive: if the client disconnects while its pairs
        wait, they are dropped from the queue (:class:`ClientGone`).
        """
        ((logits, tokens),) = await self.rerank_groups(receive, [(query, texts)], spec)
        return logits, tokens

    async def rerank_groups(
        self, receive: Any, groups: Sequence[tuple[str, Sequence[str]]], spec: ChunkSpec
    ) -> list[tuple[Any, int]]:
        """:meth:`rerank` of several queries, each with its texts, in one request (vLLM's
        paired ``/score``): all groups are queued at once, and if one fails (a 429, say) the
        others are dropped; ``max_client_batch_size`` bounds the texts of all groups."""
        s = self.settings
        if self.stopping:
            raise Unavailable("the server is shutting down")
        if not self.ready or self.scheduler is None:
            raise Unavailable("the model is not ready yet")
        n = 0
        for query, texts in groups:
            if not query:
                raise EmptyInput("the query is empty")
            if not texts:
                raise EmptyInput("no documents to rank")
            n += len(texts)
        if n > s.max_client_batch_size:
            raise InputError(f"{n} documents in one request; at most {s.max_client_batch_size}")
        # lengths are the request schemas' (a document ranked by several object fields may
        # exceed --max-input-chars in all, as each field is within it)
        for query, texts in groups:
            check_text(query, "the query")
            for i, t in enumerate(texts):
                check_text(t, f"document {i}")
        sched = self.scheduler
        if len(groups) == 1:
            ((query, texts),) = groups
            return [await unless_disconnected(receive, sched.score(query, texts, spec))]
        work = all_or_none([sched.score(query, texts, spec) for query, texts in groups])
        return await unless_disconnected(receive, work)


async def all_or_none(works: Sequence[Awaitable[T]]) -> list[T]:
    """The results of ``works``, run concurrently; the first failure cancels the others (their
    queued pairs are dropped) and is raised."""
    tasks = [asyncio.ensure_future(w) for w in works]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


async def unless_disconnected(receive: Any, work: Awaitable[T]) -> T:
    """``await work``, cancelled (and :class:`ClientGone` raised) if the client goes away."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(until_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        raise ClientGone("the client disconnected; its queued pairs were dropped")
    return task.result()
