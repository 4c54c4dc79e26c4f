"""Layerwise MiniCPM (``LayerWiseMiniCPMForCausalLM``) for bge-reranker-v2-minicpm-layerwise.

MiniCPM math: embeddings times ``scale_emb``; each residual branch (attention, MLP) times
``scale_depth / sqrt(num_hidden_layers)``; RMSNorm normalised in fp32, cast to the model dtype,
then times ``w``; rotary products in fp32; SiLU gated MLP. The layerwise reranker has one
bias-free ``Linear(hidden, 1)`` head per layer from ``start_layer`` to the last
(``lm_head.N.linear_head``): the score at cutoff ``k`` is head ``k - start_layer`` applied to the
final RMSNorm of the hidden state after ``k`` layers, at the last real token. The forward pass
stops at the largest requested cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from crossrank.errors import InputError
from crossrank.models.decoder import DecoderConfig, DecoderLM, PrefixCache


class LayerWiseHead(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(hidden, 1, bias=False)


class LayerWiseMiniCPMForCausalLM(DecoderLM):
    """Layerwise MiniCPM scoring model; ``score`` gives one column per cutoff layer."""

    offset_norm = False
    rope_fp32 = True

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__(config)
        n_heads = config.num_hidden_layers + 1 - config.start_layer
        self.lm_head = nn.ModuleList(LayerWiseHead(config.hidden_size) for _ in range(n_heads))

    def embed_scale(self, dtype: torch.dtype) -> float:
        return self.config.scale_emb

    def check_cutoffs(self, cutoffs: Sequence[int]) -> list[int]:
        """Validated cutoff layers (each in ``[start_layer, num_hidden_layers]``)."""
        lo, hi = self.config.start_layer, self.config.num_hidden_layers
        out = [int(c) for c in cutoffs]
        bad = [c for c in out if not lo <= c <= hi]
        if not out or bad:
            raise InputError(f"cutoff layers must be in [{lo}, {hi}], got {list(cutoffs)}")
        return out

    def score(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        prefix: PrefixCache | None = None,
        prefix_index: torch.Tensor | None = None,
        cutoff_layers: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """fp32 scores ``[batch, len(cutoff_layers)]``, columns in ``cutoff_layers`` order
        (default: the last layer)."""
        cutoffs = self.check_cutoffs(cutoff_layers or [self.config.num_hidden_layers])
        hidden = self.hidden_at_last(
            input_ids, attention_mask, layers=cutoffs, prefix=prefix, prefix_index=prefix_index
        )
        start = self.config.start_layer
        cols = [
            self.lm_head[k - start].linear_head(self.model.norm(hidden[k])).float() for k in cutoffs
        ]
        return torch.cat(cols, dim=1)

    def cache_layers(self, cutoff_layers: Sequence[int] | None = None) -> int:
        """Layers whose keys / values a prefix cache needs."""
        return max(cutoff_layers or [self.config.num_hidden_layers])
