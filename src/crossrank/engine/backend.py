"""The seam between the engine and whatever computes scores: a token batch in, scores out.

Every backend implements :class:`Backend` in full: the PyTorch encoder backend here, the
decoder backend (:mod:`crossrank.engine.llm_backend`), ONNX Runtime
(:mod:`crossrank.engine.onnx_backend`) and the multi-device pool (:mod:`crossrank.engine.pool`);
:func:`crossrank.engine.factory.create_backend` picks one by name.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from crossrank.engine.batching import TokenBatch


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
