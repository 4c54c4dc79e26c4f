"""Backend for the decoder (LLM) rerankers, behind the same seam as the encoders:
``score(TokenBatch) -> np.ndarray``.

Query-prefix sharing: rows whose first ``prefix_lengths[i]`` tokens are equal (the pairs of one
query: ``[bos] + "A: " + query + "\\n"``) get those tokens' keys and values computed once per
batch; each row then runs only its own suffix (passage, separator, prompt), attending to the
cached prefix. Scores equal the unshared forward pass up to float rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from crossrank.engine.batching import TokenBatch

logger = logging.getLogger(__name__)

#: share prefixes only when the tokens saved are at least this fraction of the batch's real
#: tokens: below it the extra work (mask, key/value concatenation) eats the gain (measured on
#: CPU with benchmarks/llm_prefix.py: a 7 % prefix share gave 0.96x-1.05x, 19 % gave 1.1-1.2x)
MIN_SHARED_FRACTION = 0.1


def _pad(rows: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors (pad id 0; pads are never attended to) -> ids, mask."""
    seq = max(max(len(r) for r in rows), 1)
    ids = torch.zeros(len(rows), seq, dtype=torch.long)
    mask = torch.zeros(len(rows), seq, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def split_prefixes(
    batch: TokenBatch, min_fraction: float = 0.0
) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]] | None:
    """``(distinct prefixes, row -> prefix index, suffixes)`` of a batch, or None when sharing
    would save less than ``min_fraction`` of the batch's real tokens (or none at all)."""
    if batch.prefix_lengths is None:
        return None
    ids, lengths = batch.input_ids, batch.attention_mask.sum(dim=1)
    plens = batch.prefix_lengths.tolist()
    seen: dict[tuple[int, ...], int] = {}
    index = []
    for i, pl in enumerate(plens):
        key = tuple(ids[i, :pl].tolist())
        index.append(seen.setdefault(key, len(seen)))
    if len(seen) == len(plens) or any(pl < 1 for pl in plens):
        return None
    saved = sum(plens) - sum(len(k) for k in seen)
    if saved < min_fraction * int(lengths.sum()):
        return None
    prefixes = [torch.tensor(k, dtype=torch.long) for k in seen]
    suffixes = [ids[i, pl : int(lengths[i])] for i, pl in enumerate(plens)]
    return prefixes, torch.tensor(index, dtype=torch.long), suffixes


class DecoderBackend:
    """Runs a :class:`~crossrank.models.decoder.DecoderLM` in inference mode.

    Args:
        model: the decoder (Gemma or layerwise MiniCPM).
        device / dtype: where and in which precision it runs.
        score_kwargs: passed to ``model.score`` (``token_ids=[yes_id]`` for Gemma,
            ``cutoff_layers=[...]`` for layerwise MiniCPM).
        n_outputs: scores per pair (one per cutoff layer).
        share_prefix: compute each query prefix's keys/values once per batch (when that saves
            at least :attr:`min_shared_fraction` of the batch's tokens).
    """

    name = "torch-decoder"

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        *,
        score_kwargs: dict[str, Any],
        n_outputs: int = 1,
        share_prefix: bool = True,
    ) -> None:
        self.model = model.eval()
        self.device = device
        self.dtype = dtype
        self.score_kwargs = score_kwargs
        self.n_outputs = n_outputs
        self.share_prefix = share_prefix
        self.min_shared_fraction = MIN_SHARED_FRACTION

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        return 1

    def score(self, batch: TokenBatch) -> np.ndarray:
        dev = self.device
        kw = self.score_kwargs
        with torch.inference_mode():
            split = split_prefixes(batch, self.min_shared_fraction) if self.share_prefix else None
            if split is None:
                out = self.model.score(
                    batch.input_ids.to(dev, non_blocking=True),
                    batch.attention_mask.to(dev, non_blocking=True),
                    **kw,
                )
            else:
                prefixes, index, suffixes = split
                cache = self.model.prefix_cache(
                    *_pad(prefixes, dev), n_layers=self.model.cache_layers(**kw)
                )
                out = self.model.score(
                    *_pad(suffixes, dev), prefix=cache, prefix_index=index.to(dev), **kw
                )
            out = out.float().cpu().numpy()
        return out[:, 0] if self.n_outputs == 1 else out
