"""ModernBERT cross-encoders (``ModernBertForSequenceClassification``, e.g.
gte-reranker-modernbert-base): our own forward pass, driven by config.json.

Matches transformers' ModernBertForSequenceClassification: token embeddings then LayerNorm (no
position table); pre-norm layers (the first layer has no attention norm) with a fused ``Wqkv``,
rotary positions (``global_rope_theta`` on global layers, ``local_rope_theta`` on the others,
products in fp32), global attention every ``global_attn_every_n_layers`` layers and
sliding-window attention elsewhere (a token sees the tokens at most ``local_attention // 2``
positions away), a GeGLU MLP (``Wi`` gives input and gate), LayerNorms and linears without
biases unless config.json asks for them; final LayerNorm, pooling (``classifier_pooling``:
the first token, or the mean over real tokens), then the head ``dense -> act -> norm`` and
``classifier``.

Like our other encoders the linear layers run on the real tokens only (packed
``[n_tokens, hidden]``, :class:`~crossrank.models.encoder.PackedLayout`); attention unpacks to
the padded batch with a key mask (plus the window on local layers), or, on CUDA in fp16 / bf16,
global layers use a variable-length kernel. With "cls" pooling the last layer works on each
sequence's first token only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossrank.config import read_config
from crossrank.errors import ModelLoadError, UnsupportedModelError
from crossrank.models.activations import activation
from crossrank.models.attention import select_kernel
from crossrank.models.decoder_layers import apply_rotary, rotary
from crossrank.models.encoder import PackedLayout
from crossrank.models.weights import iter_tensors, weight_files

ARCHITECTURES = ("ModernBertForSequenceClassification",)


@dataclass(frozen=True)
class ModernBertConfig:
    """The fields of a ModernBERT ``config.json`` that the forward pass depends on."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layer_types: tuple[str, ...]  # "full_attention" / "sliding_attention" per layer
    local_attention: int = 128
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    hidden_activation: str = "gelu"
    classifier_activation: str = "gelu"
    classifier_pooling: str = "cls"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    classifier_bias: bool = False
    pad_token_id: int = 50283
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """Longest input the model was trained for (``max_position_embeddings``)."""
        return self.max_position_embeddings

    @property
    def window(self) -> int:
        """Largest distance between a token and the keys it sees on a sliding-window layer."""
        return self.local_attention // 2

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModernBertConfig:
        archs = raw.get("architectures") or []
        if not any(a in ARCHITECTURES for a in archs):
            raise UnsupportedModelError(f"not a ModernBERT cross-encoder: {archs}")
        labels = int(raw.get("num_labels") or len(raw.get("id2label") or {}) or 1)
        if labels != 1:
            raise UnsupportedModelError(
                f"the checkpoint's head has {labels} labels; a reranker needs exactly 1"
            )
        pooling = raw.get("classifier_pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise UnsupportedModelError(f"classifier_pooling {pooling!r} is not 'cls' or 'mean'")
        try:
            n_layers = int(raw["num_hidden_layers"])
            every = int(raw.get("global_attn_every_n_layers", 3))
            types = tuple(
                raw.get("layer_types")
                or ["sliding_attention" if i % every else "full_attention" for i in range(n_layers)]
            )
            rope = raw.get("rope_parameters") or {}
            theta = {}
            for kind, old, default in (
                ("full_attention", "global_rope_theta", 160_000.0),
                ("sliding_attention", "local_rope_theta", 10_000.0),
            ):
                params = rope.get(kind) or {}
                if params.get("rope_type", "default") != "default" or raw.get("rope_scaling"):
                    raise UnsupportedModelError("rope scaling is not supported for ModernBERT")
                theta[kind] = float(params.get("rope_theta") or raw.get(old) or default)
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=n_layers,
                num_attention_heads=int(raw["num_attention_heads"]),
                layer_types=types,
                local_attention=int(raw.get("local_attention", 128)),
                global_rope_theta=theta["full_attention"],
                local_rope_theta=theta["sliding_attention"],
                hidden_activation=raw.get("hidden_activation", "gelu"),
                classifier_activation=raw.get("classifier_activation", "gelu"),
                classifier_pooling=pooling,
                max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
                norm_eps=float(raw.get("norm_eps", 1e-5)),
                norm_bias=bool(raw.get("norm_bias", False)),
                attention_bias=bool(raw.get("attention_bias", False)),
                mlp_bias=bool(raw.get("mlp_bias", False)),
                classifier_bias=bool(raw.get("classifier_bias", False)),
                pad_token_id=int(raw.get("pad_token_id", 50283)),
                embedding_dropout=float(raw.get("embedding_dropout", 0.0)),
                attention_dropout=float(raw.get("attention_dropout", 0.0)),
                mlp_dropout=float(raw.get("mlp_dropout", 0.0)),
                classifier_dropout=float(raw.get("classifier_dropout", 0.0)),
                initializer_range=float(raw.get("initializer_range", 0.02)),
                raw=dict(raw),
            )
        except KeyError as exc:
            raise ModelLoadError(f"config.json lacks the field {exc.args[0]!r}") from None
        bad = sorted(set(types) - {"full_attention", "sliding_attention"})
        if len(types) != n_layers or bad:
            raise UnsupportedModelError(f"layer_types {list(types)} do not fit {n_layers} layers")
        for name in (config.hidden_activation, config.classifier_activation):
            activation(name)  # an UnsupportedModelError now, not when the model is built
        return config


def _norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class Embeddings(nn.Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = _norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class Attention(nn.Module):
    def __init__(self, config: ModernBertConfig, sliding: bool) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.Wqkv = nn.Linear(h, 3 * h, bias=config.attention_bias)
        self.Wo = nn.Linear(h, h, bias=config.attention_bias)
        self.sliding = sliding
        self.dropout = config.attention_dropout

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        layout: PackedLayout,
        masks: Masks,
        first_only: bool = False,
    ) -> torch.Tensor:
        """Packed attention output ``[n_tokens, h]`` (``[batch, h]`` with ``first_only``)."""
        n = x.shape[0]
        qkv = self.Wqkv(x).view(n, 3, self.num_heads, self.head_dim)
        cos, sin = rope
        q = apply_rotary(qkv[:, 0], cos, sin, fp32=True)
        k = apply_rotary(qkv[:, 1], cos, sin, fp32=True)
        v = qkv[:, 2]
        p = self.dropout if self.training else 0.0
        if first_only:
            b, t = layout.batch, layout.seq
            q = q.index_select(0, layout.first).view(b, 1, self.num_heads, self.head_dim)
            mask = masks.first_sliding if self.sliding else masks.keys
            out = self._padded(q.transpose(1, 2), k, v, layout, mask, p)
            return self.Wo(out.transpose(1, 2).reshape(b, -1))
        if layout.kernel is not None and not self.sliding and p == 0.0:
            out = layout.kernel(q, k, v, layout).reshape(n, -1)
        else:
            b, t = layout.batch, layout.seq
            qp = layout.unpack(q.reshape(n, -1)).view(b, t, self.num_heads, self.head_dim)
            mask = masks.sliding if self.sliding else masks.keys
            out = self._padded(qp.transpose(1, 2), k, v, layout, mask, p)
            out = layout.pack(out.transpose(1, 2).reshape(b * t, -1))
        return self.Wo(out)

    def _padded(self, q, k, v, layout: PackedLayout, mask, p: float) -> torch.Tensor:
        b, t = layout.batch, layout.seq
        k = layout.unpack(k.reshape(k.shape[0], -1)).view(b, t, self.num_heads, self.head_dim)
        v = layout.unpack(v.reshape(v.shape[0], -1)).view(b, t, self.num_heads, self.head_dim)
        return F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=p
        )


class MLP(nn.Module):
    """GeGLU: ``Wo(act(input) * gate)`` with ``input, gate = Wi(x).chunk(2)``."""

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        h, f = config.hidden_size, config.intermediate_size
        self.Wi = nn.Linear(h, 2 * f, bias=config.mlp_bias)
        self.Wo = nn.Linear(f, h, bias=config.mlp_bias)
        self.act = activation(config.hidden_activation)
        self.drop = nn.Dropout(config.mlp_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(inp) * gate))


class Layer(nn.Module):
    def __init__(self, config: ModernBertConfig, index: int) -> None:
        super().__init__()
        self.attn_norm = nn.Identity() if index == 0 else _norm(config)
        self.sliding = config.layer_types[index] == "sliding_attention"
        self.attn = Attention(config, self.sliding)
        self.mlp_norm = _norm(config)
        self.mlp = MLP(config)

    def forward(self, x, ropes, layout, masks, first_only: bool = False) -> torch.Tensor:
        rope = ropes[self.sliding]
        attn = self.attn(self.attn_norm(x), rope, layout, masks, first_only)
        if first_only:
            x = x.index_select(0, layout.first)
        x = x + attn
        return x + self.mlp(self.mlp_norm(x))


@dataclass
class Masks:
    """Boolean attention masks of a padded batch (True = may attend; None = all)."""

    keys: torch.Tensor | None  # [b, 1, 1, t]: real keys (global layers)
    sliding: torch.Tensor  # [b, 1, t, t]: real keys within the window
    first_sliding: torch.Tensor  # [b, 1, 1, t]: the first token's row of ``sliding``


def _masks(attention_mask: torch.Tensor, window: int) -> Masks:
    t = attention_mask.shape[1]
    pos = torch.arange(t, device=attention_mask.device)
    near = (pos[None, :] - pos[:, None]).abs() <= window  # [t, t]
    real = attention_mask.bool()[:, None, None, :]  # [b, 1, 1, t]
    sliding = near[None, None] & real
    padded = bool((~attention_mask.bool()).any())
    return Masks(real if padded else None, sliding, sliding[:, :, :1])


class ModernBertModel(nn.Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = _norm(config)
        self.gradient_checkpointing = False
        #: attention kernel of global layers: "auto", "padded", "grouped", "torch-varlen" or
        #: "flash" (see :mod:`crossrank.models.attention`)
        self.attention = "auto"

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, first_only: bool = False
    ) -> tuple[torch.Tensor, PackedLayout]:
        """Final-norm hidden states, packed ``[n_tokens, h]`` (or ``[batch, h]`` for each
        sequence's first token with ``first_only``), and their layout."""
        cfg = self.config
        x = self.embeddings(input_ids)
        layout = PackedLayout(attention_mask, select_kernel(self.attention, x.device, x.dtype))
        x = layout.pack(x.reshape(layout.batch * layout.seq, -1))
        positions = layout.pack(
            torch.arange(layout.seq, device=x.device).repeat(layout.batch)[:, None]
        )[:, 0]
        ropes = {
            False: rotary(positions, cfg.head_dim, cfg.global_rope_theta),
            True: rotary(positions, cfg.head_dim, cfg.local_rope_theta),
        }
        masks = _masks(attention_mask, cfg.window)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            first = first_only and i == last
            if self.gradient_checkpointing and self.training:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, ropes, layout, masks, first, use_reentrant=False)
            else:
                x = layer(x, ropes, layout, masks, first)
        return self.final_norm(x), layout


class PredictionHead(nn.Module):
    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = activation(config.classifier_activation)
        self.norm = _norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class ModernBertCrossEncoder(nn.Module):
    """A ModernBERT reranker: token ids in, one relevance logit per sequence out.

    Example:
        >>> model = load_modernbert("Alibaba-NLP/gte-reranker-modernbert-base")  # doctest: +SKIP
        >>> model(input_ids, attention_mask)  # [batch]  # doctest: +SKIP
    """

    def __init__(self, config: ModernBertConfig) -> None:
        super().__init__()
        self.config = config
        self.model = ModernBertModel(config)
        self.head = PredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[batch]`` of a right-padded batch (``token_type_ids`` are not used)."""
        cls_pool = self.config.classifier_pooling == "cls"
        hidden, layout = self.model(input_ids, attention_mask, first_only=cls_pool)
        if cls_pool:
            pooled = hidden
        else:
            seq = torch.repeat_interleave(
                torch.arange(layout.batch, device=hidden.device), layout.lengths
            )
            sums = hidden.new_zeros(layout.batch, hidden.shape[1]).index_add_(0, seq, hidden)
            pooled = sums / layout.lengths[:, None].to(hidden.dtype)
        return self.classifier(self.drop(self.head(pooled))).squeeze(-1)


def load_modernbert(
    model_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ModernBertCrossEncoder:
    """Load a ``ModernBertForSequenceClassification`` checkpoint in Hugging Face layout.

    Tensors stream from the weight files one at a time and are cast to ``dtype`` on the way.
    """
    model_dir = Path(model_dir)
    config = ModernBertConfig.from_dict(read_config(model_dir / "config.json"))
    with torch.device("meta"):
        model = ModernBertCrossEncoder(config)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in iter_tensors(weight_files(model_dir)):
        if name in expected:
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ModelLoadError(
                    f"{name} in {model_dir} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(expected[name].shape)}"
                )
            state[name] = tensor.to(dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelLoadError(f"weights in {model_dir} lack {len(missing)} tensors: {shown}")
    model.load_state_dict(state, assign=True, strict=True)
    return model.to(device).eval()
