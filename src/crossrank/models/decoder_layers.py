"""The layers of the decoder-only rerankers: RMSNorm, rotary positions, grouped-query attention
(with optional per-head query / key norms and prefix keys / values), the gated MLP, the decoder
layer and the body (embeddings, layers, final norm). :mod:`crossrank.models.decoder` stacks them
into the scoring forward pass; the family points left open (norm form, rotary precision,
residual scale) come in through :class:`~crossrank.models.decoder_config.DecoderConfig` and the
constructor flags.

Batches are right-padded, and the layers run on their real tokens only, packed as
``[tokens, hidden]`` (:class:`Packing`): every matrix product, norm and activation skips the
padding. Attention alone puts queries, keys and values back in the padded batch. With causal
attention a real token never attends to a padded one (pads only follow the real tokens), so no
key mask is needed and the padded rows' outputs are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from crossrank.models.activations import activation
from crossrank.models.attention import pack_rows, unpack_rows

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
    """fp32 ``(cos, sin)`` of shape ``[*positions.shape, head_dim]`` for integer ``positions``."""
    inv_freq = 1.0 / (
        theta
        ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim)
    )
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fp32: bool) -> torch.Tensor:
    """Rotate ``x`` ``[tokens, heads, d]`` by cos / sin ``[tokens, d]``; cos/sin are rounded
    to x's dtype first.

    ``fp32``: do the products in fp32 and cast back (MiniCPM), else in x's dtype (Gemma).
    """
    cos = cos.to(x.dtype)[:, None]
    sin = sin.to(x.dtype)[:, None]
    y = x.float() if fp32 else x
    half = y.shape[-1] // 2
    rot = torch.cat((-y[..., half:], y[..., :half]), dim=-1)
    return (y * cos + rot * sin).to(x.dtype)


class Packing(NamedTuple):
    """Where the real tokens of a right-padded ``[batch, seq]`` batch are: the layers run on
    them packed, ``[tokens, hidden]``, and only attention sees the padded batch.

    ``index``: ``[tokens]`` their flat positions in ``[batch * seq]``; ``mask``: the batch's
    ``[batch, seq]`` attention mask (its shape is the padded one). Both are tensors, so a
    compiled layer treats every batch shape alike."""

    index: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing:
        """The packing of a right-padded batch's ``attention_mask``."""
        return cls(torch.nonzero(attention_mask.reshape(-1)).squeeze(1), attention_mask)


def to_heads(packing: Packing, x: torch.Tensor) -> torch.Tensor:
    """Packed ``[tokens, heads, d]`` to padded ``[batch, heads, seq, d]`` (zeros at pads)."""
    b, s = packing.mask.shape
    rows = unpack_rows(x.reshape(x.shape[0], -1), packing.index, b * s)
    return rows.view(b, s, *x.shape[1:]).transpose(1, 2)


def from_heads(packing: Packing, x: torch.Tensor) -> torch.Tensor:
    """Padded ``[batch, heads, seq, d]`` to packed ``[tokens, heads * d]``."""
    b, h, s, d = x.shape
    return pack_rows(x.transpose(1, 2).reshape(b * s, h * d), packing.index)


class Attention(nn.Module):
    """Grouped-query attention on packed tokens (:class:`Packing`); with ``config.qk_norm``
    each head's queries and keys go through an RMSNorm (``q_norm`` / ``k_norm``, over
    ``head_dim``) before the rotary positions."""

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

    def _queries(self, projected: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Rotated queries ``[n, heads, d]`` of projected rows ``[n, heads * d]``."""
        q = projected.view(projected.shape[0], self.num_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        return apply_rotary(q, cos, sin, self.rope_fp32)

    def _keys_values(self, k: torch.Tensor, v: torch.Tensor, cos, sin):
        """Rotated keys and values ``[n, kv, d]`` of projected rows ``[n, kv * d]``."""
        n = k.shape[0]
        k = k.view(n, self.num_kv, self.head_dim)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return apply_rotary(k, cos, sin, self.rope_fp32), v.view(n, self.num_kv, self.head_dim)

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k and v rows of packed ``x``: one fused product (int8 models) or three."""
        if self.qkv is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        kv = self.num_kv * self.head_dim
        return self.qkv(x).split([self.num_heads * self.head_dim, kv, kv], dim=-1)

    def keys_values(self, x, rope, packing: Packing) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values ``[batch, kv, seq, d]`` (zeros at pads) of packed ``x``."""
        cos, sin = rope
        if self.qkv is None:
            k, v = self._keys_values(self.k_proj(x), self.v_proj(x), cos, sin)
        else:
            k, v = self._keys_values(*self._projections(x)[1:], cos, sin)
        return to_heads(packing, k), to_heads(packing, v)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        packing: Packing,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output ``[tokens, h]`` of packed ``x`` ``[tokens, h]`` (``rope``: ``[tokens, d]``
        each), plus this call's rotated keys and values ``[batch, kv, seq, d]``.

        ``past``: prefix keys / values ``[b, kv, P, d]`` put before this call's keys, with
        ``mask`` ``[b, 1, s, P + s]`` (True = may attend); without ``past``, plain causal.
        """
        cos, sin = rope
        pq, pk, pv = self._projections(x)
        q = to_heads(packing, self._queries(pq, cos, sin))
        k, v = (to_heads(packing, t) for t in self._keys_values(pk, pv, cos, sin))
        keys, values = (k, v) if past is None else (_cat(past[0], k), _cat(past[1], v))
        out = self._attend(q, keys, values, mask)
        return self.o_proj(from_heads(packing, out)), k, v

    def forward_last(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        packing: Packing,
        last: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Output ``[b, h]`` for the query of packed row ``last[i]`` (each sequence's last
        token) only; keys and values still come from every token. ``mask``
        ``[b, 1, 1, keys]``."""
        cos_last, sin_last = (t.index_select(0, last) for t in rope)
        if self.qkv is None:
            q = self._queries(self.q_proj(x.index_select(0, last)), cos_last, sin_last)
            k, v = self._keys_values(self.k_proj(x), self.v_proj(x), *rope)
        else:  # the fused product at every token (its queries read at the last only)
            pq, pk, pv = self._projections(x)
            q = self._queries(pq.index_select(0, last), cos_last, sin_last)
            k, v = self._keys_values(pk, pv, *rope)
        keys, values = to_heads(packing, k), to_heads(packing, v)
        if past is not None:
            keys, values = _cat(past[0], keys), _cat(past[1], values)
        out = self._attend(q[:, :, None], keys, values, mask)  # [b, heads, 1, d]
        return self.o_proj(out.reshape(out.shape[0], -1))

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


def _cat(past: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
    return torch.cat((past, now), dim=2)


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        h, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, f, bias=False)
        self.up_proj = nn.Linear(h, f, bias=False)
        self.down_proj = nn.Linear(f, h, bias=False)
        self.hidden_act = config.hidden_act
        self.act = activation(config.hidden_act)
        #: gate / up as one int8 product, the forward pass that uses it and the compiled step
        #: between the two products (all set by :func:`crossrank.models.int8.fuse_projections`,
        #: which removes gate / up; ``glu_op`` None: tensor operations)
        self.gate_up: nn.Module | None = None
        self.fused_forward: Callable[[MLP, torch.Tensor], torch.Tensor] | None = None
        self.glu_op: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_forward is None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.fused_forward(self, x)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, offset_norm: bool, rope_fp32: bool) -> None:
        super().__init__()
        self.self_attn = Attention(config, rope_fp32, offset_norm)
        self.mlp = MLP(config)
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, offset_norm)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, offset_norm)
        self.residual_scale = config.residual_scale

    def forward(self, x, rope, packing: Packing, past=None, mask=None):
        """Packed ``x`` ``[tokens, h]`` through the layer, plus its keys and values."""
        attn, k, v = self.self_attn(self.input_layernorm(x), rope, packing, past, mask)
        return self._finish(x, attn), k, v

    def forward_last(self, x, rope, packing: Packing, last, past, mask) -> torch.Tensor:
        """The layer's output ``[b, h]`` at packed rows ``last`` (each sequence's last
        token) only."""
        attn = self.self_attn.forward_last(self.input_layernorm(x), rope, packing, last, past, mask)
        return self._finish(x.index_select(0, last), attn)

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
