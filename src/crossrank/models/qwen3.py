"""Qwen3 decoder for Qwen3-Reranker (``Qwen3ForCausalLM``, or its converted one-row
``Qwen3ForSequenceClassification`` form): our own forward pass.

Matches transformers' Qwen3 models: no embedding scale; RMSNorm normalised in fp32, cast to the
model dtype, then times ``w``; grouped-query attention whose queries and keys go through a
per-head RMSNorm (over ``head_dim``, which config.json gives and need not be
``hidden / heads``) before the rotary positions (``rope_theta``, products in the model dtype);
SiLU gated MLP; final RMSNorm; output rows tied to the embeddings or not
(``tie_word_embeddings``).

The reranker's score is ``logit("yes") - logit("no")`` at the last position, so that
``sigmoid(score)`` is P(yes) = softmax over the two logits, as the model's authors compute it.
The converted classification checkpoint stores that difference as one head row
(``score.weight`` = output row "yes" - output row "no") and gives the same score.
Only the last position's hidden state is projected, onto two rows (or the one head row).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from crossrank.errors import InputError
from crossrank.models.decoder import DecoderConfig, DecoderLM, PrefixCache

#: the converted form's architecture (one head row instead of the output projection)
SEQUENCE_CLASSIFICATION = "Qwen3ForSequenceClassification"


class Qwen3Reranker(DecoderLM):
    """Qwen3-Reranker scoring model, either checkpoint form (``config.architecture``).

    Causal LM: ``score(..., token_ids=[yes_id, no_id])`` gives ``logit(yes) - logit(no)``.
    Converted classification form: ``score(...)`` (no token ids) gives the head's output, the
    same number (the checkpoint's ``score.weight`` is loaded as ``head.weight``: a module may
    not be called ``score``, the scoring method's name).

    Example:
        >>> model = load_decoder("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> model.score(input_ids, attention_mask, token_ids=[yes_id, no_id])  # [b, 1]  # doctest: +SKIP
    """

    offset_norm = False
    rope_fp32 = False
    checkpoint_renames = {"score.weight": "head.weight"}

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__(config)
        #: the converted one-row classification form
        self.classification = config.architecture == SEQUENCE_CLASSIFICATION
        # transformers' Qwen3Config unties the output projection unless told otherwise
        self.tied = bool(config.raw.get("tie_word_embeddings", False))
        if self.classification:
            self.head = nn.Linear(config.hidden_size, 1, bias=False)
        elif not self.tied:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def output_rows(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Rows ``[n, hidden]`` of the output projection for ``token_ids`` (causal LM form)."""
        weight = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        return weight[torch.as_tensor(list(token_ids), device=weight.device)]

    def score(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        prefix: PrefixCache | None = None,
        prefix_index: torch.Tensor | None = None,
        token_ids: Sequence[int] = (),
    ) -> torch.Tensor:
        """fp32 scores ``[batch, 1]`` at each row's last real token: ``logit(token_ids[0]) -
        logit(token_ids[1])`` (the ids of "yes" and "no"), or the converted form's head."""
        expected = 0 if self.classification else 2
        if len(token_ids) != expected:
            raise InputError(
                f"token_ids must be {'empty' if expected == 0 else 'the ids of yes and no'} "
                f"for a {self.config.architecture} checkpoint, got {list(token_ids)!r}"
            )
        n = self.config.num_hidden_layers
        hidden = self.hidden_at_last(
            input_ids, attention_mask, layers=[n], prefix=prefix, prefix_index=prefix_index
        )[n]
        hidden = self.model.norm(hidden)
        if self.classification:
            return self.head(hidden).float()
        logits = (hidden @ self.output_rows(token_ids).T).float()
        return logits[:, :1] - logits[:, 1:]

    def cache_layers(self, **_: object) -> int:
        """Layers whose keys / values a prefix cache needs."""
        return self.config.num_hidden_layers
