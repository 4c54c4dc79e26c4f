"""The scoring engine: tokenize once, score identical inputs once, batch by length under a token
budget, score (one or several outputs per pair), restore order.

:meth:`Engine.plan` and :meth:`Engine.score_batch` are the one batch-scoring path: the library
(:meth:`Engine.score_encoded`) runs every batch of a plan, the server's scheduler runs the
batches of each window of queued pairs it plans, skipping what cancelled requests no longer
need."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from crossrank.engine.backend import Backend, is_oom
from crossrank.engine.batching import collate, plan_batches
from crossrank.engine.chunking import ChunkSpec, best_per_document, encode_chunked
from crossrank.engine.encoding import PairEncoding
from crossrank.engine.invariant import score_alone
from crossrank.engine.tokenize import EncodedPair
from crossrank.progress import bar as progress_bar
from crossrank.progress import listening, report_batch, wanted

logger = logging.getLogger(__name__)

#: default padded-token budget per batch, by device type (the CPU budget is refined per model
#: by :func:`cpu_token_budget`)
DEFAULT_MAX_TOKENS = {"cpu": 2048, "cuda": 65536}
#: on the CPU, keep the largest activation of a batch under this many bytes
CPU_ACTIVATION_BYTES = 16 * 2**20


def cpu_token_budget(hidden_size: int, intermediate_size: int) -> int:
    """Default padded-token budget on the CPU for a model of this width.

    Activations much larger than ~16 MiB are allocated with mmap and returned to the system
    after every operation, so each layer pays page faults to touch fresh memory again
    (measured: 1.7 million minor faults and 40% more time for MiniLM batches of 8192 tokens,
    none at 2048). Batches whose widest activation (FFN or fused QKV, fp32) fits the limit
    reuse the allocator's memory; the budget is rounded down to a power of two in [512, 8192].
    """
    widest = 4 * max(intermediate_size, 3 * hidden_size)
    budget = max(512, min(8192, CPU_ACTIVATION_BYTES // widest))
    return 1 << (budget.bit_length() - 1)


#: default padded-token budget of the ONNX backend: ONNX Runtime's kernels run fastest on
#: small batches (measured on 1000 MiniLM pairs, int8: 4.6-4.9 s at 512 tokens, 5.0-5.1 s at 1024,
#: 5.8 s at 2048, 6.8 s at 256; MiniLM fp32 and bge-reranker-base int8: 512 as fast or faster
#: than their torch budget)
ONNX_TOKEN_BUDGET = 512
#: the OpenVINO backend's padded tokens x hidden size per batch (bf16 on an Intel Xeon with
#: AMX; 1000 MiniLM pairs, hidden 384: 359 pairs/s at 256 tokens, 433 at 512, 463 at 1024, 510
#: at 2048, 469 at 4096, fp32 149 at 512 and 154 at 2048; 100 bge-reranker-base-shape pairs,
#: hidden 768: 95.9 at 1024, 87.9 at 2048, 79.1 at 4096)
OPENVINO_BATCH_WIDTH = 2048 * 384


def openvino_token_budget(hidden_size: int) -> int:
    """The OpenVINO backend's padded-token budget for a model of ``hidden_size``: 2048 tokens
    at MiniLM's 384, 1024 at base's 768 (a power of two, 512 to 4096)."""
    budget = max(512, min(4096, OPENVINO_BATCH_WIDTH // hidden_size))
    return 1 << (budget.bit_length() - 1)


#: progress bars appear from this many pairs on, on a terminal (when ``show_progress`` is None;
#: :mod:`crossrank.progress`)
PROGRESS_MIN_PAIRS = 1024


@dataclass(frozen=True)
class Batch:
    """One forward pass of a :class:`ScorePlan`: distinct inputs ``items`` (indices into
    ``plan.distinct``, longest first) and the input positions ``rows`` they answer (every
    duplicate of each)."""

    items: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class ScorePlan:
    """How a list of encoded inputs is scored: each distinct input once, in batches."""

    #: the distinct inputs (same token ids and type ids: one input), in first-seen order
    distinct: list[EncodedPair]
    #: input position -> index into :attr:`distinct`
    inverse: np.ndarray
    batches: list[Batch]
    #: scores per pair (the backend's ``n_outputs``)
    width: int

    def empty(self) -> np.ndarray:
        """A float32 array for the scores of every input: ``[n]``, or ``[n, width]``."""
        n = len(self.inverse)
        return np.zeros((n, self.width) if self.width > 1 else n, dtype=np.float32)


@dataclass(frozen=True)
class ScoredBatch:
    """What :meth:`Engine.score_batch` computed: the scores of the input positions ``rows``."""

    rows: np.ndarray
    scores: np.ndarray  # float32 [len(rows)], or [len(rows), width]
    pairs: int  # distinct inputs in the forward pass
    tokens: int  # padded tokens of the forward pass


class TokenBudget:
    """The padded-token budget of one model's forward passes, lowered after an out-of-memory
    error and kept lowered: shared by the engines of every option set over that model (a
    Reranker's per-call overrides), guarded by a lock."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._lock = threading.Lock()

    def lower(self, longest: int, pairs: int) -> int:
        """Lower the budget below a pass of ``pairs`` inputs of ``longest`` tokens that ran out
        of memory (never below one input); returns the new budget."""
        with self._lock:
            self.tokens = max(longest, min(self.tokens, longest * pairs) * 3 // 4)
            return self.tokens


class Engine:
    """Scores encoded pairs through a :class:`Backend` with length-sorted token-budget batches.

    Safe to call from several threads: a call keeps its state local; the only shared state is
    the :class:`TokenBudget` lowered after an out-of-memory error (shared with the engines of
    :meth:`sibling`).

    With ``deterministic=True`` every distinct input is scored alone, at its exact length, on
    one thread (several inputs at a time; :mod:`crossrank.engine.invariant`): its score is
    bitwise the same whatever its batch, neighbours, concurrency and thread count.
    """

    def __init__(
        self,
        tokenizer: PairEncoding,
        backend: Backend,
        *,
        pad_id: int,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        deterministic: bool = False,
        budget: TokenBudget | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.deterministic = deterministic
        self.backend = backend
        self.pad_id = pad_id
        if budget is None:
            budget = TokenBudget(max_tokens or DEFAULT_MAX_TOKENS.get(backend.device.type, 8192))
        self.budget = budget
        self.batch_size = batch_size
        self.show_progress = show_progress

    @property
    def max_tokens(self) -> int:
        """The padded-token budget of a forward pass (lowered after out-of-memory errors)."""
        return self.budget.tokens

    def sibling(self, tokenizer: PairEncoding, backend: Backend, *, pad_id: int) -> Engine:
        """An engine for other input rules or another backend over the same model: same batch
        size, progress and deterministic settings, and the same :class:`TokenBudget` (what an
        out-of-memory error taught either is kept by both)."""
        return Engine(
            tokenizer,
            backend,
            pad_id=pad_id,
            batch_size=self.batch_size,
            show_progress=self.show_progress,
            deterministic=self.deterministic,
            budget=self.budget,
        )

    def score_pairs(
        self,
        pairs: Sequence[Sequence[str]],
        *,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        chunks: ChunkSpec | None = None,
    ) -> np.ndarray:
        """Float32 scores of ``pairs`` in input order (``[n]``, or ``[n, n_outputs]``).

        With ``chunks`` (several windows per document), a pair's score is its best window's.
        """
        if not pairs:
            shape = (0, self.backend.n_outputs) if self.backend.n_outputs > 1 else (0,)
            return np.zeros(shape, dtype=np.float32)
        if max_length is None and chunks is not None:
            max_length = chunks.max_length
        if chunks is None or chunks.plain:
            encoded = self.tokenizer.encode(pairs, max_length=max_length)
            return self.score_encoded(encoded, batch_size=batch_size, show_progress=show_progress)
        req = encode_chunked(self.tokenizer, pairs, chunks, max_length=max_length)
        scores = self.score_encoded(req.pairs, batch_size=batch_size, show_progress=show_progress)
        return best_per_document(scores, req.doc_of, req.n_docs)

    def score_encoded(
        self,
        encoded: Sequence[EncodedPair],
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Float32 logits of already encoded pairs, in input order.

        A backend with ``n_outputs > 1`` (several scores per pair, e.g. several cutoff layers)
        gives an array ``[n_pairs, n_outputs]``. Identical inputs (same token ids) are scored
        once and share the score: no work spent on duplicates, and duplicates tie exactly
        (batch kernels may round a row differently depending on where it sits in the batch).
        """
        plan = self.plan(encoded, batch_size=batch_size)
        out = plan.empty()
        if not plan.batches:
            return out
        n, batches = len(plan.distinct), plan.batches
        show = self.show_progress if show_progress is None else show_progress
        big = n >= PROGRESS_MIN_PAIRS and len(batches) > 1
        # a caller following the batches (score_stream) draws the bar: none of our own
        bar = None
        if not listening() and wanted(show, big=big):
            bar = progress_bar(show=True, total=n, desc="scoring", unit="pair")
        done = 0

        def advance(pairs: int) -> None:
            nonlocal done
            done += pairs
            if bar is not None:
                bar.update(pairs)
            report_batch(done, n)

        def run(batch: Batch) -> int:
            scored = self.score_batch(plan, batch)
            out[scored.rows] = scored.scores
            return scored.pairs

        workers = self.backend.workers_for(n, len(batches))
        try:
            if workers > 1:  # a device pool: one thread per device
                with ThreadPoolExecutor(workers, thread_name_prefix="crossrank") as pool:
                    for fut in [pool.submit(run, b) for b in batches]:
                        advance(fut.result())
            else:
                for batch in batches:
                    advance(run(batch))
        finally:
            if bar is not None:
                bar.close()
        return out

    def plan(
        self,
        encoded: Sequence[EncodedPair],
        *,
        max_tokens: int | None = None,
        batch_size: int | None = None,
    ) -> ScorePlan:
        """Identical inputs (same token ids and type ids) once, the distinct ones in
        length-sorted batches of at most ``batch_size`` pairs (default: the engine's) under the
        padded-token budget (``max_tokens`` may lower the engine's budget, never raise it)."""
        first: dict[tuple, int] = {}
        inverse = np.empty(len(encoded), dtype=np.int64)
        distinct: list[EncodedPair] = []
        for i, e in enumerate(encoded):
            key = (tuple(e.ids), tuple(e.type_ids) if e.type_ids is not None else None)
            j = first.setdefault(key, len(distinct))
            if j == len(distinct):
                distinct.append(e)
            inverse[i] = j
        budget = self.max_tokens if max_tokens is None else min(max_tokens, self.max_tokens)
        planned = plan_batches(
            [len(e) for e in distinct], max_tokens=budget, max_pairs=batch_size or self.batch_size
        )
        if len(distinct) == len(encoded):  # no duplicates: a distinct input is its position
            batches = [Batch(items, items) for items in planned]
        else:
            batch_of = np.empty(len(distinct), dtype=np.int64)
            for b, items in enumerate(planned):
                batch_of[items] = b
            owner = batch_of[inverse]
            order = np.argsort(owner, kind="stable")
            cuts = np.cumsum(np.bincount(owner, minlength=len(planned)))[:-1]
            batches = [Batch(it, rows) for it, rows in zip(planned, np.split(order, cuts))]
        return ScorePlan(distinct, inverse, batches, self.backend.n_outputs)

    def score_batch(
        self, plan: ScorePlan, batch: Batch, rows: np.ndarray | None = None
    ) -> ScoredBatch:
        """Score one batch of ``plan`` for the input positions ``rows`` (some of ``batch.rows``;
        default all): only the distinct inputs they need run, as one forward pass.

        On out-of-memory the pass is halved and retried, and the token budget lowered.
        """
        items = batch.items
        if rows is None:
            rows = batch.rows
        elif len(rows) < len(batch.rows):
            items = items[np.isin(items, plan.inverse[rows])]  # longest first still
        if not len(items):
            empty = np.zeros((0, plan.width) if plan.width > 1 else 0, dtype=np.float32)
            return ScoredBatch(rows, empty, 0, 0)
        scores = self._forward(plan.distinct, items)
        sorter = np.argsort(items, kind="stable")
        at = sorter[np.searchsorted(items, plan.inverse[rows], sorter=sorter)]
        longest = max(len(plan.distinct[i]) for i in items)
        return ScoredBatch(rows, scores[at], len(items), len(items) * longest)

    def _forward(self, encoded: Sequence[EncodedPair], items: np.ndarray) -> np.ndarray:
        """Float32 scores of ``encoded[items]`` from the backend, in that order."""
        if self.deterministic:
            alone = score_alone(
                lambda i: self.backend.score(collate([encoded[i]], self.pad_id)), items
            )
            return np.concatenate(alone).astype(np.float32, copy=False)
        try:
            scores = self.backend.score(collate([encoded[i] for i in items], self.pad_id))
            return np.asarray(scores, dtype=np.float32)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc) or len(items) == 1:
                raise
            if self.backend.device.type == "cuda":
                torch.cuda.empty_cache()
            budget = self.budget.lower(max(len(encoded[i]) for i in items), len(items))
            logger.warning(
                "out of memory on a batch of %d pairs; retrying in halves (budget now %d tokens)",
                len(items),
                budget,
            )
            half = len(items) // 2
            first = self._forward(encoded, items[:half])
            return np.concatenate([first, self._forward(encoded, items[half:])])
