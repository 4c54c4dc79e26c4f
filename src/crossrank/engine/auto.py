"""``backend="auto"``: the fastest backend that keeps the fidelity promise, found by measuring.

On first use for a (model, machine) pair, :func:`resolve_auto` times every candidate this CPU
can run (:func:`candidates`: torch fp32, torch bf16 where the CPU has bf16 units, ONNX fp32 and
ONNX int8, OpenVINO fp32 and bf16 for families with an ONNX export) on a short calibration workload
(:mod:`crossrank.engine.calibrate`), checks each candidate's scores against torch fp32 (mean
per-query Spearman >= :data:`MIN_SPEARMAN`), and keeps the fastest faithful one. The decision,
its timings and the machine fingerprint are cached on disk (``$CROSSRANK_CACHE/auto``), logged,
and kept in ``Reranker.backend_choice``; later loads on the same machine read the cache.

``CROSSRANK_AUTO_MEASURE=0`` turns measuring off (``=refresh`` measures again and replaces the
cached decision): with measuring off, :func:`choose_backend`'s rules decide from the CPU's
features alone (int8 units: ONNX int8; bf16 units: torch bf16; else exact fp32; the decoders'
int8 products are never chosen by rules, their fidelity depends on the model). So do non-CPU
devices and a dtype the user gave (only the backend is then chosen).

It is opt-in: the default stays ``backend="torch"`` in fp32, the exact scores of the reference.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from crossrank.cpu import BF16_UNITS, INT8_UNITS, cpu_features
from crossrank.errors import CrossrankError

logger = logging.getLogger(__name__)

#: mean per-query Spearman against torch fp32 a candidate needs to be chosen
MIN_SPEARMAN = 0.99


@dataclass(frozen=True)
class Candidate:
    """One configuration ``backend="auto"`` can pick."""

    backend: str
    quantize: str | None = None
    dtype: torch.dtype | None = None  # None: fp32 (or the dtype the user gave)

    def describe(self) -> str:
        """``"onnx int8"``, ``"torch bf16"``, ``"torch fp32"``..."""
        if self.quantize:
            return f"{self.backend} {self.quantize}"
        return f"{self.backend} {_dtype_name(self.dtype)}"


def _dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
        dtype
    ]


@dataclass(frozen=True)
class Timing:
    """One candidate's calibration result."""

    candidate: str
    pairs_per_s: float
    spearman: float
    max_abs_diff: float
    faithful: bool
    error: str | None = None  # why it could not run (then pairs_per_s is 0)

    def as_dict(self) -> dict:
        return {
            "candidate": self.candidate,
            "pairs_per_s": round(self.pairs_per_s, 3),
            "spearman": round(self.spearman, 5),
            "max_abs_diff": float(f"{self.max_abs_diff:.3g}"),
            "faithful": self.faithful,
            "error": self.error,
        }


@dataclass(frozen=True)
class BackendChoice:
    """What ``backend="auto"`` resolved to, and why (logged, and shown by the server's /info
    and ``crossrank backends``)."""

    backend: str
    quantize: str | None
    dtype: torch.dtype | None  # None: keep the dtype the user gave (or the default)
    reason: str
    #: each candidate's measured speed and fidelity (empty when chosen by rules)
    timings: tuple[Timing, ...] = field(default=())
    #: "measured", "cache" (a measurement of an earlier run) or "rules"
    source: str = "rules"

    def describe(self) -> str:
        """``"onnx int8"``, ``"torch bf16"``...: the choice in two words."""
        if self.quantize:
            return f"{self.backend} {self.quantize}"
        if self.dtype is not None:
            return f"{self.backend} {_dtype_name(self.dtype)}"
        return self.backend

    def as_dict(self) -> dict:
        """JSON-ready form (the cache file, /info, ``crossrank backends --json``)."""
        return {
            "backend": self.describe(),
            "reason": self.reason,
            "source": self.source,
            "timings": [t.as_dict() for t in self.timings],
        }


def onnx_available() -> bool:
    """True when ONNX Runtime and onnx are installed (``crossrank[onnx]``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def openvino_available() -> bool:
    """True when OpenVINO and onnx are installed (``crossrank[openvino]``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "onnx"))


def candidates(
    backends: Collection[str],
    features: Collection[str],
    onnx: bool,
    torch_quantize: Collection[str] = (),
    openvino: bool = False,
) -> list[Candidate]:
    """What ``auto`` measures for a family running on ``backends``, exact fp32 first.

    bf16 only where the CPU has bf16 units (elsewhere it is emulated, slower than fp32); the
    family's ``torch_quantize`` (the decoders' int8 products, :mod:`crossrank.models.int8`);
    ONNX only where the family exports and ONNX Runtime is installed, OpenVINO likewise. int8
    is a candidate on every CPU: its product format is the one that is exact here
    (:func:`crossrank.cpu.int8_scheme`), and the measurement says whether it is faster."""
    bf16 = bool(BF16_UNITS.intersection(features))
    out = [Candidate("torch")]
    if bf16:
        out.append(Candidate("torch", dtype=torch.bfloat16))
    out += [Candidate("torch", q) for q in torch_quantize]
    if "onnx" in backends and onnx:
        out += [Candidate("onnx"), Candidate("onnx", "int8")]
    if "openvino" in backends and openvino:
        out.append(Candidate("openvino"))
        if bf16:
            out.append(Candidate("openvino", dtype=torch.bfloat16))
    return out


def choose_backend(
    *,
    backends: Collection[str],
    device: torch.device,
    dtype_given: bool,
    flags: Collection[str],
    onnx: bool,
) -> BackendChoice:
    """The rules ``auto`` falls back on when it does not measure.

    Args:
        backends: the backends the model's family runs on.
        device: where the model runs.
        dtype_given: the user asked for a dtype: it is kept (only the backend is chosen).
        flags: the CPU's features (:func:`crossrank.cpu.cpu_features`).
        onnx: ONNX Runtime is installed (:func:`onnx_available`).
    """
    if device.type != "cpu":
        return BackendChoice("torch", None, None, f"{device.type}: our PyTorch model")
    if dtype_given:
        return BackendChoice("torch", None, None, "a dtype was given: PyTorch in that dtype")
    int8 = sorted(INT8_UNITS.intersection(flags))
    if "onnx" in backends and onnx and int8:
        return BackendChoice(
            "onnx", "int8", None, f"the CPU has int8 dot-product units ({', '.join(int8)})"
        )
    bf16 = sorted(BF16_UNITS.intersection(flags))
    if bf16:
        return BackendChoice(
            "torch", None, torch.bfloat16, f"the CPU has bf16 units ({', '.join(bf16)})"
        )
    why = "no int8 or bf16 units on this CPU"
    if "onnx" in backends and int8 and not onnx:
        why = "ONNX Runtime is not installed (pip install 'crossrank[onnx]')"
    return BackendChoice("torch", None, None, f"{why}: exact fp32")


def pick(timings: list[Timing], cands: list[Candidate]) -> BackendChoice:
    """The fastest faithful candidate (exact fp32 when none beats it)."""
    by_name = {c.describe(): c for c in cands}
    faithful = [t for t in timings if t.faithful and t.error is None]
    best = max(faithful, key=lambda t: t.pairs_per_s)
    base = next(t for t in timings if t.candidate == "torch fp32")
    c = by_name[best.candidate]
    ratio = best.pairs_per_s / base.pairs_per_s if base.pairs_per_s else 1.0
    reason = (
        f"measured: {best.candidate} {best.pairs_per_s:.1f} pairs/s, {ratio:.2f}x torch fp32, "
        f"Spearman {best.spearman:.4f} vs fp32"
    )
    return BackendChoice(c.backend, c.quantize, c.dtype, reason, tuple(timings), "measured")


def measure_mode() -> str:
    """``CROSSRANK_AUTO_MEASURE``: ``"off"`` (0 / false / no / off), ``"refresh"`` (measure
    again, replacing the cached decision) or ``"on"`` (the default: measure once, then cache)."""
    value = os.environ.get("CROSSRANK_AUTO_MEASURE", "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return "off"
    return "refresh" if value == "refresh" else "on"


def resolve_auto(
    backends: Collection[str],
    device: torch.device,
    dtype: str | torch.dtype | None,
    quantize: str | None,
    *,
    measure: Callable[[list[Candidate], bool], BackendChoice] | None = None,
    torch_quantize: Collection[str] = (),
) -> BackendChoice:
    """What ``backend="auto"`` means for a family running on ``backends`` (and the
    ``torch_quantize`` of its torch backend) (logged).

    ``measure(candidates, refresh)`` calibrates (the Reranker passes
    :func:`crossrank.engine.calibrate.measured_choice` bound to its checkpoint); without it, or
    with measuring off, on a non-CPU device or with a dtype given, the rules decide."""
    if quantize is not None:
        raise CrossrankError("backend='auto' chooses the quantization itself; drop quantize")
    features = cpu_features()
    onnx = onnx_available()
    mode = measure_mode()
    if measure is not None and device.type == "cpu" and dtype is None and mode != "off":
        cands = candidates(backends, features, onnx, torch_quantize, openvino_available())
        choice = measure(cands, mode == "refresh")
    else:
        given = dtype is not None
        choice = choose_backend(
            backends=backends, device=device, dtype_given=given, flags=features, onnx=onnx
        )
    logger.info("backend='auto' chose %s (%s): %s", choice.describe(), choice.source, choice.reason)
    return choice
