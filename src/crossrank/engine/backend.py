"""The seam between the engine and whatever computes scores: a token batch in, scores out.

Every backend implements :class:`Backend` in full: the PyTorch encoder backend here, the
decoder backend (:mod:`crossrank.engine.llm_backend`), ONNX Runtime
(:mod:`crossrank.engine.onnx_backend`) and the multi-device pool (:mod:`crossrank.engine.pool`).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from crossrank.engine.batching import TokenBatch

logger = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a backend."""

    #: short name for logs and reports ("torch", "onnx", ...)
    name: str
    #: device the backend computes on (for default batch budgets and OOM handling)
    device: torch.device
    #: scores per pair: 1, or one per requested layer of a layerwise model
    n_outputs: int
    #: our PyTorch model, or None when another runtime computes the scores (ONNX)
    model: torch.nn.Module | None

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        """Threads the engine should score a job with (1: in the calling thread; more for a
        pool of devices)."""
        ...

    def score(self, batch: TokenBatch) -> np.ndarray:
        """Float32 scores: ``[rows]``, or ``[rows, n_outputs]`` when ``n_outputs > 1``."""
        ...


class TorchBackend:
    """Runs our PyTorch :class:`~crossrank.models.encoder.CrossEncoder` in inference mode."""

    name = "torch"
    n_outputs = 1

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model.eval()
        self.device = device
        self.dtype = dtype

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        return 1

    def score(self, batch: TokenBatch) -> np.ndarray:
        dev = self.device
        with torch.inference_mode():
            types = batch.token_type_ids
            logits = self.model(
                batch.input_ids.to(dev, non_blocking=True),
                batch.attention_mask.to(dev, non_blocking=True),
                types.to(dev, non_blocking=True) if types is not None else None,
            )
            return logits.float().cpu().numpy()


def is_oom(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


#: backend names accepted by :func:`create_backend`
BACKENDS = ("torch", "onnx")


def create_backend(
    name: str,
    *,
    model_dir,
    load_model,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    devices: list[torch.device] | None = None,
) -> Backend:
    """The backend called ``name`` for the checkpoint in ``model_dir``.

    ``load_model(device)`` returns our PyTorch model on ``device``; the ONNX backend calls it
    only when it has to export (its cache is keyed by the checkpoint's content). Several
    ``devices`` give a :class:`~crossrank.engine.pool.DevicePool` (torch only).
    """
    from crossrank.errors import CrossrankError

    if name not in BACKENDS:
        raise CrossrankError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if quantize not in (None, "int8"):
        raise CrossrankError(f"unknown quantize {quantize!r}; use None or 'int8'")
    if name == "torch":
        if quantize is not None:
            raise CrossrankError("quantize='int8' needs backend='onnx'")
        if devices and len(devices) > 1:
            from crossrank.engine.pool import DevicePool

            return DevicePool(load_model, devices, dtype)
        return TorchBackend(load_model(device), device, dtype)
    from crossrank.engine.onnx_backend import OnnxBackend

    if device.type != "cpu" or dtype != torch.float32:
        raise CrossrankError(
            "the ONNX backend runs fp32 (optionally int8-quantized) on the CPU; "
            f"got device {device} and dtype {dtype}"
        )
    if devices and len(devices) > 1:
        raise CrossrankError("devices=[...] needs backend='torch'")
    return OnnxBackend.from_checkpoint(
        model_dir, lambda: load_model(torch.device("cpu")), quantize=quantize
    )
