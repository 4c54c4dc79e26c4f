"""The scoring engine: tokenize once, batch by length under a token budget, score, restore order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
import torch

from crossrank.engine.backend import Backend, is_oom
from crossrank.engine.batching import collate, plan_batches
from crossrank.engine.chunking import ChunkSpec, best_per_document, encode_chunked
from crossrank.engine.encoding import PairEncoding
from crossrank.engine.tokenize import EncodedPair

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

#: progress bars appear from this many pairs on (when ``show_progress`` is None)
PROGRESS_MIN_PAIRS = 1024


class Engine:
    """Scores encoded pairs through a :class:`Backend` with length-sorted token-budget batches.

    Safe to call from several threads: a call keeps its state local; the only shared state is
    the budget lowered after an out-of-memory error, which is guarded by a lock.
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
    ) -> None:
        self.tokenizer = tokenizer
        self.backend = backend
        self.pad_id = pad_id
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS.get(backend.device.type, 8192)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._lock = threading.Lock()

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
        first: dict[tuple, int] = {}
        inverse = np.empty(len(encoded), dtype=np.int64)
        unique: list[EncodedPair] = []
        for i, e in enumerate(encoded):
            key = (tuple(e.ids), tuple(e.type_ids) if e.type_ids is not None else None)
            j = first.setdefault(key, len(unique))
            if j == len(unique):
                unique.append(e)
            inverse[i] = j
        if len(unique) == len(encoded):
            return self._score_all(encoded, batch_size, show_progress)
        return self._score_all(unique, batch_size, show_progress)[inverse]

    def _score_all(
        self, encoded: Sequence[EncodedPair], batch_size: int | None, show_progress: bool | None
    ) -> np.ndarray:
        width = self.backend.n_outputs
        out = np.zeros((len(encoded), width) if width > 1 else len(encoded), dtype=np.float32)
        if not encoded:
            return out
        max_pairs = batch_size or self.batch_size
        batches = plan_batches(
            [len(e) for e in encoded], max_tokens=self.max_tokens, max_pairs=max_pairs
        )
        show = self.show_progress if show_progress is None else show_progress
        if show is None:
            show = len(encoded) >= PROGRESS_MIN_PAIRS and len(batches) > 1
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(encoded), desc="scoring", unit="pair")
        workers = self.backend.workers_for(len(encoded), len(batches))
        try:
            if workers > 1:  # a device pool: one thread per device
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(workers, thread_name_prefix="crossrank") as pool:
                    futures = [pool.submit(self.score_into, encoded, i, out) for i in batches]
                    for idx, fut in zip(batches, futures):
                        fut.result()
                        if bar is not None:
                            bar.update(len(idx))
            else:
                for idx in batches:
                    self.score_into(encoded, idx, out)
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def score_into(self, encoded: Sequence[EncodedPair], idx: np.ndarray, out: np.ndarray) -> None:
        """Score the items ``idx`` of ``encoded`` as one batch into ``out[idx]``.

        On out-of-memory the batch is halved and retried, and the token budget lowered.
        """
        try:
            out[idx] = self.backend.score(collate([encoded[i] for i in idx], self.pad_id))
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc) or len(idx) == 1:
                raise
            if self.backend.device.type == "cuda":
                torch.cuda.empty_cache()
            with self._lock:
                longest = max(len(encoded[i]) for i in idx)
                self.max_tokens = max(longest, min(self.max_tokens, longest * len(idx)) * 3 // 4)
            logger.warning(
                "out of memory on a batch of %d pairs; retrying in halves (budget now %d tokens)",
                len(idx),
                self.max_tokens,
            )
            half = len(idx) // 2
            self.score_into(encoded, idx[:half], out)
            self.score_into(encoded, idx[half:], out)
