"""Training inputs: the task's encoded pairs (:mod:`crossrank.families.training`) in
length-sorted chunks under a padded-token budget."""

from __future__ import annotations

import numpy as np
import torch


def make_chunks(encoded: list, pad_id: int, max_tokens: int, device: torch.device):
    """Length-sorted chunks under a padded-token budget, and the permutation back."""
    from crossrank.engine.batching import collate, plan_batches

    plan = plan_batches([len(e) for e in encoded], max_tokens=max_tokens)
    chunks = []
    for idx in plan:
        b = collate([encoded[i] for i in idx], pad_id)
        types = b.token_type_ids.to(device) if b.token_type_ids is not None else None
        chunks.append((b.input_ids.to(device), b.attention_mask.to(device), types))
    order = torch.from_numpy(np.concatenate(plan))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    padded = sum(c[0].numel() for c in chunks)
    real = sum(len(e) for e in encoded)
    return chunks, inverse.to(device), real, padded
