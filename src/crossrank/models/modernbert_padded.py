"""The padded-batch forward pass of ModernBERT cross-encoders (:mod:`crossrank.models.modernbert`),
the form their ONNX export traces (:meth:`crossrank.families.modernbert.ModernBertFamily.onnx_export`).

It runs :class:`~crossrank.models.modernbert.ModernBertCrossEncoder`'s math on the padded
batch (the packed layout's data-dependent shapes export poorly): rotary positions computed in
the graph for the batch's length, one additive attention bias for global layers (padding) and
one for sliding-window layers (padding and distance), explicit softmax attention, GeGLU,
pooling over real tokens. A masked position gets one large negative bias (never two added
up), so padded rows stay finite and mean pooling never sees a NaN. ONNX Runtime's BERT
fusions do not apply to this layout; its session-level graph optimisations do. The head and
classifier sit under ``/head/`` so int8 quantization leaves them fp32, as for the encoders.
"""

from __future__ import annotations

import torch
from torch import nn

from crossrank.models.decoder_layers import rotary


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class Head(nn.Module):
    """``classifier(head(pooled))``: the prediction head and the classifier in one module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head, self.classifier = model.head, model.classifier

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        # on a 3-D input the classifier exports as MatMul + Add, not Gemm, which the int8
        # quantizer would rewrite (and quantize) despite the exclusion of /head/ nodes
        return self.classifier(self.head(pooled[:, None])).reshape(-1)


class PaddedModernBert(nn.Module):
    """The ModernBERT cross-encoder on a right-padded batch, in ONNX-exportable form."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.config = model.config
        self.embeddings = model.model.embeddings
        self.layers = model.model.layers
        self.final_norm = model.model.final_norm
        self.head = Head(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, t = input_ids.shape
        heads, d = cfg.num_attention_heads, cfg.head_dim
        x = self.embeddings(input_ids)
        pos = torch.arange(t, device=x.device)
        ropes = {
            False: rotary(pos, d, cfg.global_rope_theta),
            True: rotary(pos, d, cfg.local_rope_theta),
        }
        real = attention_mask.bool()[:, None, None, :]  # [b, 1, 1, t]
        near = (pos[None, :] - pos[:, None]).abs() <= cfg.window  # [t, t]
        neg = torch.finfo(x.dtype).min
        zero = torch.zeros((), dtype=x.dtype)
        biases = {
            False: torch.where(real, zero, neg),
            True: torch.where(real & near[None, None], zero, neg),
        }
        for layer in self.layers:
            cos, sin = ropes[layer.sliding]
            qkv = layer.attn.Wqkv(layer.attn_norm(x)).view(b, t, 3, heads, d)
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            scores = torch.matmul(q, k.transpose(-1, -2)) * d**-0.5 + biases[layer.sliding]
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
            x = x + layer.attn.Wo(ctx.transpose(1, 2).reshape(b, t, heads * d))
            x = x + layer.mlp(layer.mlp_norm(x))
        x = self.final_norm(x)
        if cfg.classifier_pooling == "cls":
            pooled = x[:, 0]
        else:
            m = attention_mask.to(x.dtype)[:, :, None]
            pooled = (x * m).sum(dim=1) / m.sum(dim=1)
        return self.head(pooled)
