"""OpenVINO backend: a family's ONNX export compiled by OpenVINO for the CPU.

The model is crossrank's own export (:mod:`~crossrank.engine.onnx_export`) without ONNX
Runtime's fusions (operators OpenVINO does not read), cached as ONNX beside the other exports
(:mod:`~crossrank.engine.onnx_cache`, variant ``plain``), and compiled when the backend loads
(OpenVINO's own cache of compiled models is not used: reading a bf16 model back from it crashed
OpenVINO 2026.4 in a crossrank process). Batches come from crossrank's own batching (sorted by length,
little padding), which is where its lead over sentence-transformers' OpenVINO backend comes from
(docs/performance.md).

Precision: fp32 (``INFERENCE_PRECISION_HINT=f32``: scores within 1e-4 of torch fp32) or bf16
(OpenVINO's own default on CPUs with bf16 units: AMX / AVX512-BF16), which
``backend="auto"`` measures like torch bf16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossrank.engine.batching import TokenBatch
from crossrank.engine.onnx_backend import graph_inputs
from crossrank.engine.onnx_cache import cached_model
from crossrank.engine.onnx_export import OnnxExport
from crossrank.errors import CrossrankError, missing_extra

#: the precisions this backend runs, by torch dtype, as OpenVINO names them
PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}


class OpenVinoBackend:
    """Scores token batches with a model compiled by OpenVINO on the CPU."""

    name = "openvino"
    n_outputs = 1
    #: no PyTorch model: OpenVINO computes the scores
    model = None
    device = torch.device("cpu")

    def __init__(self, path: str | Path, *, dtype: torch.dtype = torch.float32) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise missing_extra("openvino", "openvino") from None
        if dtype not in PRECISIONS:
            raise CrossrankError(
                f"backend='openvino' runs fp32 or bf16 on the CPU; got dtype {dtype}"
            )
        self.path = Path(path)
        self.dtype = dtype
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, every core on it
            "INFERENCE_PRECISION_HINT": PRECISIONS[dtype],
        }
        self.compiled = core.compile_model(str(self.path), "CPU", config)
        self.inputs = {i.get_any_name() for i in self.compiled.inputs}
        self.output = self.compiled.output(0)

    @classmethod
    def from_checkpoint(
        cls,
        model_dir: str | Path,
        load_model: Callable[[], nn.Module],
        export: OnnxExport,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> OpenVinoBackend:
        """The backend for a checkpoint directory, exporting through the on-disk cache (the
        family's ``export`` of ``load_model()``, called only when the cache lacks it)."""
        try:
            import onnx  # noqa: F401
            import openvino  # noqa: F401
        except ImportError as exc:
            raise missing_extra("openvino", exc.name or "openvino") from None
        path = cached_model(Path(model_dir), load_model, export, None, plain=True)
        return cls(path, dtype=dtype)

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        return 1

    def score(self, batch: TokenBatch) -> np.ndarray:
        logits = self.compiled(graph_inputs(batch, self.inputs))[self.output]
        return np.asarray(logits, dtype=np.float32).reshape(-1)
