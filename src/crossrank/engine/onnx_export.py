"""Export of our CrossEncoder to ONNX, ONNX Runtime's transformer fusions, and the whole
build of a cache entry (export, optimise, optionally quantize; ModernBERT cross-encoders have
their own export: :mod:`crossrank.engine.onnx_modernbert`).

The export runs the same math as :class:`~crossrank.models.encoder.CrossEncoder` on the padded
batch (the packed-token layout uses data-dependent shapes that ONNX graphs handle poorly):
separate query / key / value products, an additive attention mask, and explicit softmax
attention, which is the pattern ONNX Runtime's transformer optimizer fuses into its
``Attention``, ``SkipLayerNormalization`` and ``BiasGelu`` kernels.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from crossrank.config import EncoderConfig, read_config
from crossrank.engine.onnx_modernbert import export_modernbert
from crossrank.engine.onnx_quantize import is_large, quantize_int8
from crossrank.models.modernbert import ARCHITECTURES as MODERNBERT

logger = logging.getLogger(__name__)

#: bump when the exported graph or the optimisation recipe changes (invalidates the cache)
EXPORT_VERSION = 4
OPSET = 17


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


def export_onnx(model: nn.Module, path: Path, with_types: bool) -> None:
    """Export our model (fp32, CPU) to ``path`` with dynamic batch and sequence axes."""
    import warnings

    padded = PaddedCrossEncoder(model.float().cpu().eval()).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 5, 6, 2, 1]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.long)
    args: tuple = (ids, mask)
    names = ["input_ids", "attention_mask"]
    if with_types:
        args = (ids, mask, torch.zeros_like(ids))
        names.append("token_type_ids")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            padded,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def optimize(src: Path, dst: Path, config) -> None:
    """ONNX Runtime's transformer fusions (attention, skip-LayerNorm, bias-GELU)."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    fused = opt.get_fused_operator_statistics()
    logger.info("ONNX Runtime fusions: %s", {k: v for k, v in fused.items() if v})
    opt.save_model_to_file(str(dst), use_external_data_format=is_large(opt.model))


def build(
    model_dir: Path,
    load_model: Callable[[], nn.Module],
    quantize: str | None,
    out: Path,
    scheme: str | None = None,
):
    """Export, optimise and (optionally) quantize into the empty directory ``out``; ``scheme``
    is int8's product format (:data:`crossrank.engine.onnx_quantize.SCHEMES`)."""
    raw = read_config(model_dir / "config.json")
    t0 = time.perf_counter()
    final = out / "optimized.onnx"
    if any(a in MODERNBERT for a in raw.get("architectures") or []):
        # its own padded graph; ONNX Runtime's BERT fusions do not match it
        with_types = False
        export_modernbert(load_model(), final, OPSET)
    else:
        config = EncoderConfig.from_dict(raw)
        with_types = config.type_vocab_size > 1
        export_onnx(load_model(), out / "exported.onnx", with_types=with_types)
        optimize(out / "exported.onnx", final, config)
    if quantize == "int8":
        quantize_int8(final, out / "int8.onnx", scheme or "u8s8")
        final = out / "int8.onnx"
    for f in out.iterdir():
        if f.name != final.name and not f.name.startswith(final.name):
            f.unlink()
    final.rename(out / "model.onnx")
    meta = {
        "checkpoint": str(model_dir),
        "quantize": quantize,
        "int8_scheme": scheme if quantize else None,
        "with_types": with_types,
        "export_version": EXPORT_VERSION,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
