"""One C++ loop for the step between the int8 MLP's two products (CPU, ``quantize="int8"``).

Between gate / up's product and the down projection's, each token's row goes: int32 sums ->
fp32 (row scale x weight scales) -> ``act(gate) * up`` -> the Walsh-Hadamard rotation
(:func:`crossrank.models.int8.hadamard`) -> its largest magnitude -> int8. Written as tensor
operations, the compiler makes four passes over the batch's ``[tokens, intermediate]`` rows
(it cannot mix values ``n / 16`` apart and the row's maximum inside its first loop), and
with ~2,000 tokens those rows leave the caches between passes. :func:`operator` does the
whole step per row, the row held in a buffer that stays in L1: measured on the Gemma
benchmark shape (rows of 2,048, 2,048 tokens, 2 cores) 2.7 ms instead of 14.3 ms for the
compiled tensor operations, with the same int8 values.

The source below is compiled once per CPU class with the C++ compiler ``torch.compile`` uses
(:func:`crossrank.models.compiled.cpp_compiler`), for the vector instructions CPUID reports
(:func:`crossrank.cpu.cpu_features`: AVX-512, else AVX2 + FMA, else the compiler's default),
and cached in ``$CROSSRANK_CACHE/kernels``. Rows are split between the threads of torch's own
OpenMP pool (the loop links ``libgomp``, which is the one torch has loaded where torch uses
GNU OpenMP, as its Linux wheels do). Without a compiler, with
``CROSSRANK_COMPILE=0``, or on a torch without ``torch.library.custom_op``, the same step runs
as tensor operations (:func:`crossrank.models.int8.glu_quantize_reference`), which the tests
compare it with.

Every row is computed alone, so a pair's values never depend on its batch.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: the activations the loop computes (checkpoint ``hidden_act`` names -> the loop's code)
ACTIVATIONS = {"gelu_pytorch_tanh": 0, "gelu_new": 0, "silu": 1, "swish": 1}

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>

// exp(x): range reduction to [-ln2/2, ln2/2], degree-6 polynomial, 2^n from the exponent bits;
// about 1 ulp, no calls and no branches, so the loops around it vectorise.
static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

// rows x [gate | up] int32 sums -> rows x n int8 and one scale per row, rows split between
// the OpenMP threads (torch's own pool: the same libgomp); returns 1 when a thread could not
// allocate its row buffer (nothing is then trustworthy), else 0
extern "C" int glu_rotate_quantize(
        const int32_t* sums, const float* xscale, const float* wscale, int64_t rows,
        int64_t n, int64_t act, int64_t block, int8_t* q, float* qscale) {
    const int64_t m = n / block;
    const float norm = 1.0f / sqrtf((float)block);
    int failed = 0;
    #pragma omp parallel if (rows >= 128)
    {
    float* work = (float*)malloc(n * sizeof(float));
    if (work == NULL) {
        #pragma omp atomic write
        failed = 1;
    }
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        if (work == NULL) continue;
        const int32_t* g = sums + r * 2 * n;
        const int32_t* u = g + n;
        const float s = xscale[r];
        if (act == 0) {  // GELU-tanh: x / (1 + exp(-2 sqrt(2 / pi) (x + 0.044715 x^3)))
            for (int64_t c = 0; c < n; ++c) {
                float x = (float)g[c] * s * wscale[c];
                float z = x + 0.044715f * x * x * x;
                float a = x / (1.0f + exp_poly(-1.5957691216057308f * z));
                work[c] = a * ((float)u[c] * s * wscale[n + c]);
            }
        } else {  // SiLU: x / (1 + exp(-x))
            for (int64_t c = 0; c < n; ++c) {
                float x = (float)g[c] * s * wscale[c];
                float a = x / (1.0f + exp_poly(-x));
                work[c] = a * ((float)u[c] * s * wscale[n + c]);
            }
        }
        for (int64_t step = 1; step < block; step *= 2)  // butterflies on slices of m values
            for (int64_t start = 0; start < block; start += 2 * step)
                for (int64_t i = start; i < start + step; ++i) {
                    float* a = work + i * m;
                    float* b = work + (i + step) * m;
                    for (int64_t x = 0; x < m; ++x) {
                        float ta = a[x] + b[x], tb = a[x] - b[x];
                        a[x] = ta;
                        b[x] = tb;
                    }
                }
        // max |v|: the largest bit pattern of the magnitudes (an integer max vectorises)
        int32_t amax_bits = 0;
        for (int64_t c = 0; c < n; ++c) {
            float v = work[c] * norm;
            work[c] = v;
            int32_t bits;
            memcpy(&bits, &v, 4);
            bits &= 0x7fffffff;
            amax_bits = bits > amax_bits ? bits : amax_bits;
        }
        float amax;
        memcpy(&amax, &amax_bits, 4);
        const float sc = (amax > 1e-12f ? amax : 1e-12f) / 127.0f;
        qscale[r] = sc;
        int8_t* qr = q + r * n;
        for (int64_t c = 0; c < n; ++c) qr[c] = (int8_t)__builtin_rintf(work[c] / sc);
    }
    free(work);
    }
    return failed;
}
"""

_lock = threading.Lock()
_loaded: dict[str, object] = {}  # "fn": the ctypes function, or None once it failed


def isa_flags() -> list[str]:
    """The compiler's vector-instruction flags for this CPU (from CPUID, as the kernels read it)."""
    from crossrank.cpu import cpu_features, is_x86

    if not is_x86():
        return []
    features = cpu_features()
    if "avx512" in features:
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"]
    if "avx2" in features:
        return ["-mavx2", "-mfma"]
    return []


def _build() -> object | None:
    """Compile (or find cached) and load the loop; None where that is not possible."""
    from crossrank import hub
    from crossrank.atomic import atomic_path
    from crossrank.models import compiled

    compiler = compiled.cpp_compiler()
    if compiler is None or not hasattr(torch.library, "custom_op"):
        return None
    flags = ["-O3", *isa_flags(), "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
    flags += ["-fPIC", "-shared"]
    key = hashlib.sha256("\n".join([_SOURCE, compiler, *flags]).encode()).hexdigest()[:16]
    target = hub.cache_dir("kernels") / f"glu-quantize-{key}.so"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = target.with_suffix(".cpp")
            with atomic_path(source) as tmp:
                Path(tmp).write_text(_SOURCE)
            with atomic_path(target) as tmp:
                subprocess.run(
                    [compiler, *flags, "-x", "c++", str(source), "-o", str(tmp)],
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
        fn = ctypes.CDLL(str(target)).glu_rotate_quantize
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        logger.warning(
            "could not build the int8 MLP loop (%s %s); using tensor operations",
            exc,
            detail.decode(errors="replace")[-500:],
        )
        return None
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 2
    fn.restype = ctypes.c_int
    logger.debug("int8 MLP loop: %s", target)
    return fn


def _function() -> object | None:
    with _lock:
        if "fn" not in _loaded:
            _loaded["fn"] = _build()
        return _loaded["fn"]


def _run(
    sums: torch.Tensor, xscale: torch.Tensor, wscale: torch.Tensor, act: int, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    fn = _function()
    assert fn is not None
    rows, n = sums.shape[0], sums.shape[1] // 2
    assert sums.dtype == torch.int32 and xscale.dtype == wscale.dtype == torch.float32
    assert xscale.numel() == rows and wscale.numel() == 2 * n and n % block == 0
    sums, xscale, wscale = sums.contiguous(), xscale.contiguous(), wscale.contiguous()
    q = torch.empty(rows, n, dtype=torch.int8)
    scale = torch.empty(rows, 1)
    failed = fn(  # type: ignore[operator]
        sums.data_ptr(),
        xscale.data_ptr(),
        wscale.data_ptr(),
        rows,
        n,
        act,
        block,
        q.data_ptr(),
        scale.data_ptr(),
    )
    if failed:
        raise MemoryError(f"the int8 MLP loop could not allocate a row buffer of {n} floats")
    return q, scale


_op: list = []  # the registered operator, once


def operator(hidden_act: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """The compiled loop as the operator ``crossrank::glu_rotate_quantize(sums, xscale, wscale,
    act, block)`` (opaque to ``torch.compile``; the arguments and result of
    :func:`crossrank.models.int8.glu_quantize_reference`, ``act`` the code of
    :data:`ACTIVATIONS`), or None where the loop cannot run here or does not compute
    ``hidden_act``. Resolve it once, at load: the first call builds the loop."""
    from crossrank.models import compiled

    if hidden_act not in ACTIVATIONS or not compiled.enabled() or _function() is None:
        return None
    with _lock:
        if not _op:

            @torch.library.custom_op("crossrank::glu_rotate_quantize", mutates_args=())
            def op(
                sums: torch.Tensor, xscale: torch.Tensor, wscale: torch.Tensor, act: int, block: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
                return _run(sums, xscale, wscale, act, block)

            @op.register_fake
            def _(sums, xscale, wscale, act, block):
                rows, n = sums.shape[0], sums.shape[1] // 2
                return sums.new_empty((rows, n), dtype=torch.int8), sums.new_empty(
                    (rows, 1), dtype=torch.float32
                )

            _op.append(torch.ops.crossrank.glu_rotate_quantize.default)
        return _op[0]
