"""glibc's allocator set for CPU inference: activation buffers reused, not faulted in again.

By default glibc serves every allocation above its mmap threshold (128 KiB at first) with a
fresh ``mmap`` and gives freed memory at the top of the heap back to the kernel. A forward pass
on the CPU allocates activations of megabytes per layer, so each batch maps new pages and the
kernel zero-fills them on first touch: on the 2-core benchmark machine that cost a decoder
reranker about a sixth of its time (Gemma shape, 2 x 50 pairs: fp32 24.9 -> 30.2 pairs/s, bf16
49.1 -> 57.0, peak RSS +80 MB; docs/notes/llm-cpu.md). :func:`tune` raises both thresholds to
1 GiB, so freed buffers stay in the heap and the next batch reuses them (what jemalloc or
tcmalloc do, as Intel's and PyTorch's CPU tuning guides recommend preloading).

It changes the whole process's allocator (memory freed is kept for reuse up to the peak), so
it is logged, applied once, only on glibc, and ``CROSSRANK_MALLOC=default`` leaves glibc's
settings alone. Loading a model is the exception (:func:`loading`): while weights stream in,
each read in fp32 and then cast or quantized, glibc's 128 KiB threshold is back, so every
buffer is unmapped when freed and a bf16 or int8 model never holds the fp32 reads' memory
(measured on the Qwen3-0.6B shape, int8: 2.5 GB resident at the end of loading with the
raised thresholds, 1.6 GB with glibc's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: both thresholds (bytes)
THRESHOLD = 1 << 30
#: glibc's own starting thresholds, used while a model loads
DEFAULT_THRESHOLD = 128 * 1024

_state: dict[str, bool] = {}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True when they are set.

    Does nothing (False) off Linux / glibc or with ``CROSSRANK_MALLOC=default``."""
    if "tuned" in _state:
        return _state["tuned"]
    _state["tuned"] = False
    setting = os.environ.get("CROSSRANK_MALLOC", "tuned").strip().lower()
    if setting == "default":
        logger.info("CROSSRANK_MALLOC=default: glibc's allocator settings left alone")
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = _libc()
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
    if ok:
        logger.info(
            "glibc malloc: mmap and trim thresholds set to 1 GiB (activation buffers reused; "
            "CROSSRANK_MALLOC=default to leave glibc's settings)"
        )
    _state["tuned"] = ok
    return ok


def release() -> None:
    """Give the heap's free memory back to the kernel (``malloc_trim``) after :func:`tune`:
    called after each model ``backend="auto"`` measured."""
    if _state.get("tuned"):
        _libc().malloc_trim(0)


@contextmanager
def loading() -> Iterator[None]:
    """While a model loads: glibc's default thresholds (each large buffer mapped, and
    unmapped when freed), then the tuned ones back and the heap trimmed. A no-op unless
    :func:`tune` set them."""
    if not _state.get("tuned"):
        yield
        return
    libc = _libc()
    libc.mallopt(_M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, DEFAULT_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD)
        libc.malloc_trim(0)
