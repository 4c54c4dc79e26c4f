"""The typed view of a decoder ``config.json``: what the decoder-only rerankers' forward pass
depends on (:mod:`crossrank.models.decoder`, :mod:`crossrank.models.decoder_layers`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossrank.errors import ModelLoadError, UnsupportedModelError


@dataclass(frozen=True)
class DecoderConfig:
    """The fields of a decoder ``config.json`` that the scoring forward pass depends on.

    :meth:`from_dict` reads what every decoder family shares; a family adjusts what its own
    checkpoints mean (activation names, head size, residual scale) with
    :func:`dataclasses.replace` in its ``parse_config`` (see :mod:`crossrank.families`).
    """

    architecture: str
    kind: str  # the family's registry name ("gemma", "minicpm-layerwise", ...)
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    hidden_act: str
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    bos_token_id: int | None
    pad_token_id: int | None
    attention_bias: bool = False
    #: each residual branch is multiplied by this (MiniCPM: scale_depth / sqrt(layers))
    residual_scale: float = 1.0
    #: RMSNorm on each head's queries and keys before the rotary positions (Qwen3)
    qk_norm: bool = False
    scale_emb: float = 1.0  # MiniCPM
    scale_depth: float = 1.0  # MiniCPM
    start_layer: int = 0  # MiniCPM layerwise: first layer with a head
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_tokens(self) -> int:
        """Longest input the model was trained for (``max_position_embeddings``)."""
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, raw: dict[str, Any], kind: str) -> DecoderConfig:
        """The shared fields of ``raw`` for the decoder family ``kind``."""
        archs = raw.get("architectures") or []
        arch = archs[0] if archs else kind
        rope = raw.get("rope_parameters") or {}
        scaling = raw.get("rope_scaling") or (
            rope if rope.get("rope_type", "default") != "default" else None
        )
        if scaling:
            raise UnsupportedModelError(f"rope scaling {scaling!r} is not supported")
        try:
            heads = int(raw["num_attention_heads"])
            hidden = int(raw["hidden_size"])
            return cls(
                architecture=arch,
                kind=kind,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                intermediate_size=int(raw["intermediate_size"]),
                hidden_act=str(raw.get("hidden_act") or raw.get("hidden_activation") or "silu"),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=float(raw.get("rope_theta") or rope.get("rope_theta") or 10000.0),
                max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
                bos_token_id=raw.get("bos_token_id"),
                pad_token_id=raw.get("pad_token_id"),
                attention_bias=bool(raw.get("attention_bias", False)),
                scale_emb=float(raw.get("scale_emb", 1.0)),
                scale_depth=float(raw.get("scale_depth", 1.0)),
                start_layer=int(raw.get("start_layer", 0)),
                raw=dict(raw),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, KeyError):
                raise ModelLoadError(f"config.json lacks the field {exc.args[0]!r}") from None
            raise ModelLoadError(f"config.json has a field of the wrong type: {exc}") from None
