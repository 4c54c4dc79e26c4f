"""The layers of the decoder-only rerankers: RMSNorm, rotary positions, grouped-query attention
(with optional per-head query / key norms and prefix keys / values), the gated MLP, the decoder
layer and the body (embeddings, layers, final norm). :mod:`crossrank.models.decoder` stacks them
into the scoring forward pass; the family points left open (norm form, rotary precision,
residual scale) come in through :class:`~crossrank.models.decoder_config.DecoderConfig` and the
constructor flags.

Batches are right-padded. With causal attention a real token never attends to a padded one
(pads only follow the real tokens), so no key mask is needed and padded rows are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from crossrank.errors import UnsupportedModelError

if TYPE_CHECKING:
    from crossrank.models.decoder_config import DecoderConfig


class RMSNorm(nn.Module):
    """RMSNorm in fp32. ``offset=True`` is Gemma's ``x * (1 + w)`` computed in fp32 then cast;
    ``offset=False`` is MiniCPM's: normalised in fp32, cast to the model dtype, then ``* w``."""

    def __init__(self, dim: int, eps: float, offset: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:
            return (xf * (1.0 + self.weight.float())).to(x.dtype)
        return xf.to(x.dtype) * self.weight


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, ...]:
    """fp32 ``(cos, sin)`` of shape ``[batch, seq, head_dim]`` for integer ``positions``."""
    inv_freq = 1.0 / (
        theta
        ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim)
    )
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fp32: bool) -> torch.Tensor:
    """Rotate ``x`` ``[batch, heads, seq, d]``; cos/sin are rounded to x's dtype first.

    ``fp32``: do the products in fp32 and cast back (MiniCPM), else in x's dtype (Gemma).
    """
    cos = cos.to(x.dtype)[:, None]
    sin = sin.to(x.dtype)[:, None]
    y = x.float() if fp32 else x
    half = y.shape[-1] // 2
    rot = torch.cat((-y[..., half:], y[..., :half]), dim=-1)
    return (y * cos + rot * sin).to(x.dtype)


def activation(name: str):
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return F.silu
    if name == "gelu":
        return F.gelu
    raise UnsupportedModelError(f"hidden activation {name!r} is not supported")


class Attention(nn.Module):
    """Grouped-query attention; with ``config.qk_norm`` each head's queries and keys go through
    an RMSNorm (``q_norm`` / ``k_norm``, over ``head_dim``) before the rotary positions."""

    def __init__(self, config: DecoderConfig, rope_fp32: bool, offset_norm: bool = False) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            d,
        )
        bias = config.attention_bias
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=bias)
        self.k_proj = nn.Linear(h, self.num_kv * d, bias=bias)
        self.v_proj = nn.Linear(h, self.num_kv * d, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=bias)
        self.rope_fp32 = rope_fp32
        #: q / k / v as one product (set by :func:`crossrank.models.int8.fuse_projections`,
        #: which removes the three)
        self.qkv: nn.Module | None = None
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps, offset_norm)
            self.k_norm = RMSNorm(d, config.rms_norm_eps, offset_norm)

    def _queries(self, x: torch.Tensor, projected: torch.Tensor | None = None) -> torch.Tensor:
        """Unrotated queries ``[b, heads, s, d]`` (of ``projected``, when given, else of x)."""
        b, s, _ = x.shape
        q = self.q_proj(x) if projected is None else projected
        q = q.view(b, s, self.num_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        return q.transpose(1, 2)

    def _fused(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values from the one fused product (int8 models)."""
        assert self.qkv is not None
        kv = self.num_kv * self.head_dim
        return self.qkv(x).split([self.num_heads * self.head_dim, kv, kv], dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        past: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output ``[b, s, h]`` plus this call's rotated keys and values.

        ``past``: prefix keys / values ``[b, kv, P, d]`` put before this call's keys, with
        ``mask`` ``[b, 1, s, P + s]`` (True = may attend); without ``past``, plain causal.
        """
        b, s, _ = x.shape
        cos, sin = rope
        if self.qkv is None:
            q = self._queries(x)
            k, v, keys, values = self._keys_values(x, rope, past)
        else:
            pq, pk, pv = self._fused(x)
            q = self._queries(x, pq)
            k, v, keys, values = self._keys_values(x, rope, past, (pk, pv))
        q = apply_rotary(q, cos, sin, self.rope_fp32)
        out = self._attend(q, keys, values, mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1)), k, v

    def forward_last(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        last: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Output ``[b, 1, h]`` for the query at position ``last[i]`` of each row only (keys and
        values still come from every position); ``mask`` ``[b, 1, 1, keys]``."""
        b = x.shape[0]
        rows = torch.arange(b, device=x.device)
        cos, sin = rope
        xq = x[rows, last][:, None]
        if self.qkv is None:
            q = self._queries(xq)
            _, _, keys, values = self._keys_values(x, rope, past)
        else:  # the fused product at every position (its queries read at the last only)
            pq, pk, pv = self._fused(x)
            q = self._queries(xq, pq[rows, last][:, None])
            _, _, keys, values = self._keys_values(x, rope, past, (pk, pv))
        q = apply_rotary(q, cos[rows, last][:, None], sin[rows, last][:, None], self.rope_fp32)
        out = self._attend(q, keys, values, mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, 1, -1))

    def _keys_values(self, x, rope, past, projected=None):
        b, s, _ = x.shape
        cos, sin = rope
        if projected is None:
            projected = (self.k_proj(x), self.v_proj(x)) if self.qkv is None else self._fused(x)[1:]
        k = projected[0].view(b, s, self.num_kv, self.head_dim)
        if self.k_norm is not None:
            k = self.k_norm(k)
        k = k.transpose(1, 2)
        v = projected[1].view(b, s, self.num_kv, self.head_dim).transpose(1, 2)
        k = apply_rotary(k, cos, sin, self.rope_fp32)
        if past is None:
            return k, v, k, v
        return k, v, torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)

    def _attend(self, q, keys, values, mask):
        return F.scaled_dot_product_attention(
            q,
            keys,
            values,
            attn_mask=mask,
            is_causal=mask is None,
            scale=self.head_dim**-0.5,
            enable_gqa=self.num_kv != self.num_heads,
        )


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        h, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, f, bias=False)
        self.up_proj = nn.Linear(h, f, bias=False)
        self.down_proj = nn.Linear(f, h, bias=False)
        self.act = activation(config.hidden_act)
        #: gate / up as one product (set by :func:`crossrank.models.int8.fuse_projections`,
        #: which removes the two)
        self.gate_up: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, offset_norm: bool, rope_fp32: bool) -> None:
        super().__init__()
        self.self_attn = Attention(config, rope_fp32, offset_norm)
        self.mlp = MLP(config)
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, offset_norm)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, offset_norm)
        self.residual_scale = config.residual_scale

    def forward(self, x, rope, past=None, mask=None):
        attn, k, v = self.self_attn(self.input_layernorm(x), rope, past, mask)
        return self._finish(x, attn), k, v

    def forward_last(self, x, rope, last, past, mask) -> torch.Tensor:
        """The layer's output ``[b, h]`` at position ``last[i]`` of each row only."""
        attn = self.self_attn.forward_last(self.input_layernorm(x), rope, last, past, mask)
        rows = torch.arange(x.shape[0], device=x.device)
        return self._finish(x[rows, last][:, None], attn)[:, 0]

    def _finish(self, x, attn):
        """Residual attention branch, then the MLP branch."""
        x = x + attn * self.residual_scale if self.residual_scale != 1.0 else x + attn
        h = self.mlp(self.post_attention_layernorm(x))
        return x + h * self.residual_scale if self.residual_scale != 1.0 else x + h


class DecoderBody(nn.Module):
    """Embeddings, decoder layers and final norm (``model.*`` in the checkpoint)."""

    def __init__(self, config: DecoderConfig, offset_norm: bool, rope_fp32: bool) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, offset_norm, rope_fp32) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, offset_norm)
