"""The padded-batch forward pass of our cross-encoders (:mod:`crossrank.models.encoder`), the
form their ONNX export traces (:meth:`crossrank.families.encoder.EncoderFamily.onnx_export`).

The same math as :class:`~crossrank.models.encoder.CrossEncoder` on the padded batch (the
packed-token layout uses data-dependent shapes that ONNX graphs handle poorly): separate query /
key / value products, an additive attention mask, and explicit softmax attention, which is the
pattern ONNX Runtime's transformer optimizer fuses into its ``Attention``,
``SkipLayerNormalization`` and ``BiasGelu`` kernels.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PaddedCrossEncoder(nn.Module):
    """The CrossEncoder's math on a padded batch, in the form ONNX Runtime's optimizer fuses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.config = model.config
        self.embeddings = model.encoder.embeddings
        self.layers = model.encoder.layers
        self.head = model.head
        h = self.config.hidden_size
        self.q, self.k, self.v = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for layer in self.layers:
            for i, part in enumerate((self.q, self.k, self.v)):
                lin = nn.Linear(h, h)
                with torch.no_grad():
                    lin.weight.copy_(layer.qkv.weight[i * h : (i + 1) * h])
                    lin.bias.copy_(layer.qkv.bias[i * h : (i + 1) * h])
                part.append(lin)
        heads, d = self.config.num_attention_heads, self.config.head_dim
        self.tail = FirstTokenTail(self.layers[-1], self.q[-1], heads, d)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t = input_ids.shape
        heads, d = self.config.num_attention_heads, self.config.head_dim
        x = self.embeddings(input_ids, attention_mask, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        scale = math.sqrt(d)
        last = len(self.layers) - 1
        for i, (layer, q, k, v) in enumerate(zip(self.layers, self.q, self.k, self.v)):

            def split(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, -1, heads, d).permute(0, 2, 1, 3)

            keys, values = split(k(x)).transpose(-1, -2), split(v(x))
            if i == last:  # queries and everything after attention: first token only
                x = self.tail(x[:, :1], keys, values, bias)
                break
            probs = torch.softmax(torch.matmul(split(q(x)), keys) / scale + bias, dim=-1)
            ctx = torch.matmul(probs, values).permute(0, 2, 1, 3).reshape(b, t, heads * d)
            x = layer.attn_norm(x + layer.attn_out(ctx))
            x = layer.ffn_norm(x + layer.ffn_out(layer.act(layer.ffn_in(x))))
        return self.head(x[:, 0]).squeeze(-1)


class FirstTokenTail(nn.Module):
    """The last layer from its query projection on, for the first token of each sequence:
    the only row the classification head reads. Its graph nodes are named ``/tail/...``."""

    def __init__(self, layer: nn.Module, q: nn.Linear, heads: int, head_dim: int) -> None:
        super().__init__()
        self.layer, self.q = layer, q
        self.heads, self.head_dim = heads, head_dim

    def forward(self, first, keys, values, bias):
        b = first.shape[0]
        query = self.q(first).view(b, 1, self.heads, self.head_dim).permute(0, 2, 1, 3)
        scores = torch.matmul(query, keys) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + bias, dim=-1)
        ctx = torch.matmul(probs, values).permute(0, 2, 1, 3).reshape(b, 1, -1)
        layer = self.layer
        x = layer.attn_norm(first + layer.attn_out(ctx))
        return layer.ffn_norm(x + layer.ffn_out(layer.act(layer.ffn_in(x))))
