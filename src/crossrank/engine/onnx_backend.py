"""ONNX Runtime backend: a family's model exported to ONNX, optimised, optionally int8-quantized.

The pieces: :mod:`~crossrank.engine.onnx_export` (the export of the family's padded-batch
forward pass and ONNX Runtime's fusions), :mod:`~crossrank.engine.onnx_quantize` (dynamic int8, per-token feed-forward
products), :mod:`~crossrank.engine.onnx_cache` (the on-disk cache keyed by the checkpoint's
content). This module holds the backend that scores token batches with the cached model.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossrank.engine.batching import TokenBatch
from crossrank.engine.onnx_cache import cached_model
from crossrank.engine.onnx_export import OnnxExport
from crossrank.errors import missing_extra


def graph_inputs(batch: TokenBatch, names: Collection[str]) -> dict[str, np.ndarray]:
    """A token batch as the exported graph's inputs (``names``: those the graph has; token type
    ids are zeros where the batch has none)."""
    feed = {
        "input_ids": batch.input_ids.numpy(),
        "attention_mask": batch.attention_mask.numpy(),
    }
    if "token_type_ids" in names:
        types = batch.token_type_ids
        feed["token_type_ids"] = (
            types.numpy() if types is not None else np.zeros_like(feed["input_ids"])
        )
    return feed


class OnnxBackend:
    """Scores token batches with an ONNX Runtime session on the CPU."""

    name = "onnx"
    n_outputs = 1
    #: no PyTorch model: ONNX Runtime computes the scores
    model = None
    device = torch.device("cpu")

    def __init__(self, path: str | Path, *, quantize: str | None = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_extra("onnx", "onnxruntime") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.path = Path(path)
        self.quantize = quantize
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    @classmethod
    def from_checkpoint(
        cls,
        model_dir: str | Path,
        load_model: Callable[[], nn.Module],
        export: OnnxExport,
        *,
        quantize: str | None = None,
    ) -> OnnxBackend:
        """The backend for a checkpoint directory, exporting through the on-disk cache (the
        family's ``export`` of ``load_model()``, called only when the cache lacks it)."""
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise missing_extra("onnx", exc.name or "onnxruntime") from None
        return cls(cached_model(Path(model_dir), load_model, export, quantize), quantize=quantize)

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        return 1

    def score(self, batch: TokenBatch) -> np.ndarray:
        (logits,) = self.session.run(["logits"], graph_inputs(batch, self.inputs))
        return np.asarray(logits, dtype=np.float32).reshape(-1)
