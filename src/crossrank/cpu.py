"""What this CPU can run, read the way the kernels read it.

The kernels that compute scores (oneDNN through torch, ONNX Runtime's MLAS) pick their code
paths from CPUID, not from ``/proc/cpuinfo``: under an emulator (``qemu-x86_64 -cpu Haswell``)
or a hypervisor that masks features, the two disagree, and only CPUID tells which instructions
the int8 and bf16 kernels will really use. :func:`cpu_features` therefore asks torch's CPUID
reader (the ``cpuinfo`` library it links), and :func:`int8_scheme` derives from it the int8
product format that is exact on this CPU.

Example:
    >>> sorted(cpu_features())  # doctest: +SKIP
    ['avx2', 'avx512', 'avx512_bf16', 'avx512_vnni']
    >>> int8_scheme()  # doctest: +SKIP
    'u8s8'
"""

from __future__ import annotations

import os
import platform
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path

from crossrank.errors import CrossrankError

#: the features :func:`cpu_features` reports, and torch's CPUID probe for each
_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512": "_is_avx512_supported",
    "avx512_vnni": "_is_vnni_supported",
    "avx512_bf16": "_is_avx512_bf16_supported",
    "amx": "_is_amx_tile_supported",
}
#: features of int8 dot-product units (u8 x s8 products summed in 32 bits, no saturation)
INT8_UNITS = frozenset({"avx512_vnni", "amx"})
#: features of bf16 matrix units (oneDNN runs bf16 products on them)
BF16_UNITS = frozenset({"avx512_bf16", "amx"})


@lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """The CPU features the kernels will use (CPUID through torch; see :data:`_PROBES`).

    On other architectures than x86-64 the set is empty: ARM's int8 dot products (sdot /
    udot) do not saturate, and bf16 there is not measured yet, so nothing is promised.

    ``CROSSRANK_DISABLE_FEATURES=avx512_bf16,amx`` hides features (comma-separated names of
    :data:`_PROBES`) from crossrank's choices: how a CPU without them is measured on one that
    has them (add ``ONEDNN_MAX_CPU_ISA`` to keep oneDNN off them as well)."""
    import torch.cpu

    hidden = {
        f.strip().lower()
        for f in os.environ.get("CROSSRANK_DISABLE_FEATURES", "").split(",")
        if f.strip()
    }
    unknown = sorted(hidden - set(_PROBES))
    if unknown:
        raise CrossrankError(
            f"CROSSRANK_DISABLE_FEATURES: unknown feature(s) {', '.join(unknown)}; "
            f"use {', '.join(_PROBES)}"
        )
    found = set()
    for name, probe in _PROBES.items():
        try:
            if getattr(torch.cpu, probe)():
                found.add(name)
        except (AttributeError, RuntimeError):  # an older torch without the probe
            continue
    return frozenset(found - hidden)


def is_x86() -> bool:
    """True on x86-64 (where MLAS's int8 kernels differ by instruction set)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def int8_scheme(features: Collection[str] | None = None, *, x86: bool | None = None) -> str:
    """The int8 product format that is exact on this CPU: ``"u8s8"`` or ``"u8u8"``.

    On x86-64 without int8 dot-product units (AVX2-only, or AVX-512 without VNNI), ONNX Runtime
    multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which sums pairs of
    products in 16 bits and saturates (255 x 127 x 2 > 32767): scores drift, badly for some
    models. uint8 weights (zero point 128, the same 255 levels) take the u8 x u8 kernel, which
    widens to 16 bits before multiplying and sums in 32 bits: the same integer results as the
    VNNI kernels, at some speed. With VNNI / AMX, or on ARM (sdot / udot), u8 x s8 is exact.

    ``CROSSRANK_INT8_SCHEME=u8u8`` forces the portable format (for example for an export cache
    shared by machines of several CPU classes, or to measure its fidelity on a VNNI machine);
    ``u8s8`` on a CPU without int8 units is refused, since it would saturate.

    Example:
        >>> int8_scheme({"avx2"}, x86=True)
        'u8u8'
        >>> int8_scheme({"avx2", "avx512", "avx512_vnni"}, x86=True)
        'u8s8'
    """
    features = cpu_features() if features is None else features
    x86 = is_x86() if x86 is None else x86
    native = "u8s8" if not x86 or INT8_UNITS.intersection(features) else "u8u8"
    forced = os.environ.get("CROSSRANK_INT8_SCHEME", "").strip().lower()
    if forced in ("", native):
        return native
    if forced == "u8u8":
        return forced
    raise CrossrankError(
        f"CROSSRANK_INT8_SCHEME={forced!r}: use u8u8 (exact everywhere) or leave it unset; "
        "u8s8 saturates on this CPU (no VNNI / AMX int8 units)"
        if forced == "u8s8"
        else f"CROSSRANK_INT8_SCHEME={forced!r}: use u8u8 or leave it unset"
    )


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the host's name under an emulator)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "CPU part"):
            return value.strip()
    return platform.processor() or platform.machine()


def describe() -> str:
    """One line naming the CPU, the features the kernels use and the core count: for logs and
    benchmark records. Example: ``AMD EPYC (x86_64: avx2 avx512 avx512_vnni avx512_bf16; 2
    cores)``."""
    feats = " ".join(f for f in _PROBES if f in cpu_features()) or "no avx2"
    return f"{cpu_model()} ({platform.machine()}: {feats}; {os.cpu_count()} cores)"
