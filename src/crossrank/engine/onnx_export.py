"""The export of a family's model to ONNX, ONNX Runtime's transformer fusions, and the whole
build of a cache entry (export, optimise, optionally quantize).

What is exported is the family's: its :class:`OnnxExport` (the padded-batch forward pass of its
model, which lives beside the model in :mod:`crossrank.models`, whether token type ids are an
input, whether ONNX Runtime's BERT fusions apply). This module knows no architecture.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crossrank.engine.onnx_quantize import is_large, quantize_int8

logger = logging.getLogger(__name__)

#: bump when the exported graph or the optimisation recipe changes (invalidates the cache)
EXPORT_VERSION = 4
OPSET = 17


@dataclass(frozen=True)
class OnnxExport:
    """A family's export: what it gives :func:`build` (see :attr:`crossrank.families.base.Family.onnx_export`)."""

    #: our model (fp32, CPU, eval) -> its padded-batch forward pass ``(input_ids,
    #: attention_mask[, token_type_ids]) -> logits [batch]``, the module traced
    padded: Callable[[nn.Module], nn.Module]
    #: whether ``token_type_ids`` is an input of the graph
    with_types: bool = False
    #: ``(heads, hidden size)`` for ONNX Runtime's BERT fusions (attention, skip-LayerNorm,
    #: bias-GELU), or None where they do not match the graph
    bert_fusions: tuple[int, int] | None = None


def export_onnx(model: nn.Module, export: OnnxExport, path: Path) -> None:
    """Trace ``export.padded(model)`` (fp32, CPU) into ``path`` with dynamic batch and sequence
    axes."""
    import warnings

    padded = export.padded(model.float().cpu().eval()).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 5, 6, 2, 1]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.long)
    args: tuple = (ids, mask)
    names = ["input_ids", "attention_mask"]
    if export.with_types:
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


def optimize(src: Path, dst: Path, heads: int, hidden: int) -> None:
    """ONNX Runtime's transformer fusions (attention, skip-LayerNorm, bias-GELU)."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
    )
    fused = opt.get_fused_operator_statistics()
    logger.info("ONNX Runtime fusions: %s", {k: v for k, v in fused.items() if v})
    opt.save_model_to_file(str(dst), use_external_data_format=is_large(opt.model))


def one_file(src: Path, dst: Path) -> None:
    """``src`` saved as ``dst``, a model over 2 GB with all its weights in one file beside it,
    ``dst.name + ".data"`` (torch's exporter writes one file per tensor, which the cache entry
    would not keep)."""
    import onnx

    model = onnx.load(str(src))
    if is_large(model):
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.name + ".data")  # fmt: skip
    else:
        onnx.save(model, str(dst))


def build(
    model_dir: Path,
    load_model: Callable[[], nn.Module],
    export: OnnxExport,
    quantize: str | None,
    out: Path,
    scheme: str | None = None,
    *,
    source: Path | None = None,
):
    """Export (the family's ``export``), optimise and (optionally) quantize into the empty
    directory ``out``; ``scheme`` is int8's product format
    (:data:`crossrank.engine.onnx_quantize.SCHEMES`). ``source``: the same checkpoint's
    exported and optimised fp32 model (an fp32 cache entry), which int8 quantizes instead of
    exporting again (the export is deterministic, so the result is the same)."""
    t0 = time.perf_counter()
    final = out / "optimized.onnx"
    if quantize == "int8" and source is not None:
        final = source
    elif export.bert_fusions is None:
        export_onnx(load_model(), export, out / "exported.onnx")
        one_file(out / "exported.onnx", final)
    else:
        export_onnx(load_model(), export, out / "exported.onnx")
        optimize(out / "exported.onnx", final, *export.bert_fusions)
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
        "with_types": export.with_types,
        "export_version": EXPORT_VERSION,
        "quantized_from": str(source) if quantize and source is not None else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
