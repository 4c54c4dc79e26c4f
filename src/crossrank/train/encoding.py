"""Training inputs: sampled groups to token ids with the reference's training length rules,
then length-sorted chunks under a padded-token budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from crossrank.train.config import TrainConfig


class PairEncoder:
    """Encodes sampled groups with the reference's training length rules.

    FlagEmbedding's encoder fine-tuning cuts the query to ``query_max_length +
    passage_max_length // 4`` tokens and the passage to ``passage_max_length +
    query_max_length // 2``, then cuts the assembled pair (special tokens included) to
    ``query_max_length + passage_max_length`` on the passage side. A short query thus leaves
    its unused budget to the passage. ``max_length`` caps the pair on top of that.
    """

    def __init__(
        self, model_dir: Path, cfg: TrainConfig, use_type_ids: bool, pad_default: int
    ) -> None:
        from crossrank.engine.tokenize import PairTokenizer, load_tokenizer, pad_token_id

        tok = load_tokenizer(model_dir)
        self.pair = PairTokenizer(tok, max_length=cfg.max_length, use_type_ids=use_type_ids)
        self.pad_id = pad_token_id(tok, model_dir, pad_default)
        qmax, pmax = cfg.query_max_length, cfg.passage_max_length
        self.pair_max, _ = self.pair.limits(min(cfg.max_length, qmax + pmax))  # room for text
        self.query_cut = min(qmax + pmax // 4, self.pair_max - self.pair.num_special)
        self.passage_cut = pmax + qmax // 2

    def encode(self, groups) -> list:
        queries = list(dict.fromkeys(g.query for g in groups))
        q_encs = dict(
            zip(queries, self.pair.tokenizer.encode_batch(queries, add_special_tokens=False))
        )
        passages = [p for g in groups for p in g.passages]
        p_encs = self.pair.tokenizer.encode_batch(passages, add_special_tokens=False)
        out, i = [], 0
        special = self.pair.num_special
        for g in groups:
            q = q_encs[g.query]
            for _ in g.passages:
                limit = min(self.pair_max, min(len(q), self.query_cut) + self.passage_cut + special)
                out.append(self.pair.assemble(q, p_encs[i], limit, self.query_cut))
                i += 1
        return out


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
