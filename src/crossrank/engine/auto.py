"""``backend="auto"``: the fastest backend that keeps the fidelity promise on this machine.

The choice is a pure function of what the machine has (:func:`choose_backend`), so it is tested
with faked CPU flags; :func:`cpu_flags` reads the real ones. The rules follow the measurements in
docs/performance.md (one run on an AMD EPYC with avx512_bf16 + VNNI, bge-reranker-base shape):
ONNX Runtime int8 ran 2.7x torch fp32 with mean per-query Spearman 0.997 against fp32, torch bf16
1.7x with 0.9995, ONNX fp32 within a few percent of torch fp32.

It is opt-in: the default stays ``backend="torch"`` in fp32, the exact scores of the reference.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: CPU flags (as /proc/cpuinfo names them) of int8 dot-product units ONNX Runtime uses
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: CPU flags of bf16 matrix units oneDNN (torch's CPU kernels) uses
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class BackendChoice:
    """What ``backend="auto"`` resolved to, and why (logged, and shown by the server's /info)."""

    backend: str
    quantize: str | None
    dtype: torch.dtype | None  # None: keep the dtype the user gave (or the default)
    reason: str

    def describe(self) -> str:
        """``"onnx int8"``, ``"torch bf16"``...: the choice in two words."""
        if self.quantize:
            return f"{self.backend} {self.quantize}"
        if self.dtype is not None:
            return f"{self.backend} {str(self.dtype).removeprefix('torch.')}"
        return self.backend


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first CPU's flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def onnx_available() -> bool:
    """True when ONNX Runtime and onnx are installed (``crossrank[onnx]``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def choose_backend(
    *,
    backends: Collection[str],
    device: torch.device,
    dtype_given: bool,
    flags: Collection[str],
    onnx: bool,
) -> BackendChoice:
    """The backend ``backend="auto"`` uses for a family that runs on ``backends``.

    Args:
        backends: the backends the model's family runs on.
        device: where the model runs.
        dtype_given: the user asked for a dtype: it is kept (only the backend is chosen).
        flags: the CPU's flags (:func:`cpu_flags`).
        onnx: ONNX Runtime is installed (:func:`onnx_available`).
    """
    if device.type != "cpu":
        return BackendChoice("torch", None, None, f"{device.type}: our PyTorch model")
    if dtype_given:
        return BackendChoice("torch", None, None, "a dtype was given: PyTorch in that dtype")
    int8 = sorted(INT8_FLAGS.intersection(flags))
    if "onnx" in backends and onnx and int8:
        return BackendChoice(
            "onnx", "int8", None, f"the CPU has int8 dot-product units ({', '.join(int8)})"
        )
    bf16 = sorted(BF16_FLAGS.intersection(flags))
    if bf16:
        return BackendChoice(
            "torch", None, torch.bfloat16, f"the CPU has bf16 units ({', '.join(bf16)})"
        )
    why = "no int8 or bf16 units on this CPU"
    if "onnx" in backends and int8 and not onnx:
        why = "ONNX Runtime is not installed (pip install 'crossrank[onnx]')"
    return BackendChoice("torch", None, None, f"{why}: exact fp32")


def resolve_auto(
    backends: Collection[str],
    device: torch.device,
    dtype: str | torch.dtype | None,
    quantize: str | None,
) -> BackendChoice:
    """What ``backend="auto"`` means for a family running on ``backends`` (logged)."""
    from crossrank.errors import CrossrankError

    if quantize is not None:
        raise CrossrankError("backend='auto' chooses the quantization itself; drop quantize")
    choice = choose_backend(
        backends=backends,
        device=device,
        dtype_given=dtype is not None,
        flags=cpu_flags(),
        onnx=onnx_available(),
    )
    logger.info("backend='auto' chose %s: %s", choice.describe(), choice.reason)
    return choice
