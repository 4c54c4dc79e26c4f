"""Length-sorted, token-budget batching and padding of encoded pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossrank.engine.tokenize import EncodedPair


@dataclass
class TokenBatch:
    """A right-padded batch: what a backend consumes."""

    input_ids: torch.Tensor  # [batch, seq] int64
    attention_mask: torch.Tensor  # [batch, seq] int64, 1 on real tokens
    token_type_ids: torch.Tensor | None = None  # [batch, seq] int64, or None (all zeros)
    #: [batch] int64: leading tokens that depend only on the query (LLM rerankers), or None
    prefix_lengths: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.attention_mask.sum())


def plan_batches(
    lengths: Sequence[int] | np.ndarray, *, max_tokens: int, max_pairs: int | None = None
) -> list[np.ndarray]:
    """Group item indices into batches, longest first, under a padded-token budget.

    A batch padded to its longest item holds at most ``max_tokens`` tokens (padding counted)
    and at most ``max_pairs`` items; an item longer than the budget gets a batch of its own.
    Sorting is stable, so equal lengths keep their input order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = max(1, max_tokens // max(longest, 1))
        if max_pairs is not None:
            size = min(size, max_pairs)
        batches.append(order[start : start + size])
        start += size
    return batches


def collate(items: Sequence[EncodedPair], pad_id: int) -> TokenBatch:
    """Right-pad encoded pairs into a :class:`TokenBatch` (CPU tensors)."""
    seq = max(len(it) for it in items)
    ids = np.full((len(items), seq), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), seq), dtype=np.int64)
    with_types = items[0].type_ids is not None
    types = np.zeros((len(items), seq), dtype=np.int64) if with_types else None
    for row, it in enumerate(items):
        n = len(it.ids)
        ids[row, :n] = it.ids
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = it.type_ids
    prefix = None
    if items[0].prefix_len is not None:
        prefix = torch.tensor([it.prefix_len or 0 for it in items], dtype=torch.int64)
    return TokenBatch(
        torch.from_numpy(ids),
        torch.from_numpy(mask),
        torch.from_numpy(types) if types is not None else None,
        prefix,
    )
