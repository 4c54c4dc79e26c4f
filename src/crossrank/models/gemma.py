"""Gemma decoder (``GemmaForCausalLM``) for bge-reranker-v2-gemma: our own forward pass.

Matches transformers' GemmaForCausalLM: embeddings times ``sqrt(hidden)`` (the factor rounded to
the model dtype), RMSNorm ``x * (1 + w)`` computed in fp32, rotary positions with
``rope_theta``, multi-query / grouped attention with ``head_dim`` from config.json, gelu-tanh
gated MLP, final RMSNorm, output projection tied to the embeddings.

Only what a reranker reads is computed: the hidden state at each row's last real token is
projected onto the few vocabulary rows asked for (the "Yes" token), never onto the whole
vocabulary at every position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from crossrank.models.decoder import DecoderConfig, DecoderLM, PrefixCache


class GemmaForCausalLM(DecoderLM):
    """Gemma scoring model: ``score`` gives the logits of chosen tokens at the last position.

    Example:
        >>> model = load_decoder("bge-reranker-v2-gemma")  # doctest: +SKIP
        >>> model.score(input_ids, attention_mask, token_ids=[yes_id])  # [b, 1]  # doctest: +SKIP
    """

    offset_norm = True
    rope_fp32 = False

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__(config)
        self.tied = bool(config.raw.get("tie_word_embeddings", True))
        if not self.tied:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def embed_scale(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(self.config.hidden_size**0.5, dtype=torch.float32).to(dtype)

    def output_rows(self, token_ids: list[int]) -> torch.Tensor:
        """Rows ``[n, hidden]`` of the output projection for ``token_ids``."""
        weight = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        return weight[torch.as_tensor(token_ids, device=weight.device)]

    def score(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        prefix: PrefixCache | None = None,
        prefix_index: torch.Tensor | None = None,
        token_ids: Sequence[int] = (),
    ) -> torch.Tensor:
        """fp32 logits ``[batch, len(token_ids)]`` at each row's last real token."""
        n = self.config.num_hidden_layers
        hidden = self.hidden_at_last(
            input_ids, attention_mask, layers=[n], prefix=prefix, prefix_index=prefix_index
        )[n]
        rows = self.output_rows(list(token_ids))
        return (self.model.norm(hidden) @ rows.T).float()

    def cache_layers(self, **_: object) -> int:
        """Layers whose keys / values a prefix cache needs."""
        return self.config.num_hidden_layers
