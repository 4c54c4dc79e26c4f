"""``torch.compile`` for the decoder layers of the int8 path on the CPU.

The int8 products (:mod:`crossrank.models.int8`) leave the rest of a decoder layer as a chain
of small memory-bound steps: quantizing each row, turning the int32 sums back into floats,
rotary positions, RMSNorm, the gated activation, residual adds. PyTorch's compiler (Inductor)
fuses them into a few vectorised C++ loops around the int8 products and the attention kernel.
Measured on the Gemma benchmark shape (2 x 50 debian-ir pairs, 2 cores): int8 55 -> 75
pairs/s; fp32 and bf16 gain little (their time is in the matrix products), so only the int8
path is compiled, and never the exact fp32 path.

It needs a C++ compiler (``g++`` / ``c++`` / ``clang++``, or ``$CXX``): without one the layers
run as they are. The first use of a model shape compiles for tens of seconds; PyTorch caches
the result on disk (``$TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``), so
later processes start in seconds. The same compiler builds the int8 MLP's C++ loop
(:mod:`crossrank.models.int8_kernel`). ``CROSSRANK_COMPILE=0`` turns both off.
"""

from __future__ import annotations

import logging
import os
import shutil

from torch import nn

logger = logging.getLogger(__name__)


def cpp_compiler() -> str | None:
    """The C++ compiler Inductor would use, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def enabled() -> bool:
    """``CROSSRANK_COMPILE`` is not 0 / false / no / off and a C++ compiler is installed."""
    value = os.environ.get("CROSSRANK_COMPILE", "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if cpp_compiler() is None:
        logger.info("no C++ compiler found: the int8 layers run uncompiled (slower)")
        return False
    return True


def compile_layers(layers: nn.ModuleList) -> bool:
    """Compile each :class:`~crossrank.models.decoder_layers.DecoderLayer`'s ``forward``
    (dynamic shapes: one graph for every batch and length) when :func:`enabled`, with the
    MLP's activation in the form that compiles fastest; True when it did."""
    from crossrank.models.activations import activation

    if not enabled():
        return False
    for layer in layers:
        layer.mlp.act = activation(layer.mlp.hidden_act, compiled=True)
        layer.compile(dynamic=True)
    logger.info("int8 decoder layers compiled with torch.compile (CROSSRANK_COMPILE=0: off)")
    return True
