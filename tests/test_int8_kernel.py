"""The compiled loop between the int8 MLP's two products: the same int8 values and scales as
the tensor operations it replaces, each row alone, under ``torch.compile``, and out of the way
when compiling is off. In the isa set: under an emulated AVX2-only CPU the loop is built for
AVX2 (scripts/test-isa.sh)."""

from __future__ import annotations

import pytest
import torch

from crossrank.models import compiled, int8_kernel
from crossrank.models.activations import activation
from crossrank.models.int8 import glu_quantize_reference
from crossrank.models.int8_kernel import ACTIVATIONS, operator

pytestmark = pytest.mark.isa

needs_compiler = pytest.mark.skipif(
    compiled.cpp_compiler() is None, reason="no C++ compiler: the loop cannot be built"
)


@pytest.fixture(autouse=True)
def _compiling_on(monkeypatch):
    """The test session turns compiling off (tests/conftest.py); the loop needs it on."""
    monkeypatch.setenv("CROSSRANK_COMPILE", "1")


def _inputs(rows: int, n: int, seed: int = 0):
    """int32 gate | up sums of int8 products over 512 inputs, and plausible scales."""
    g = torch.Generator().manual_seed(seed)
    sums = torch.randint(-300_000, 300_000, (rows, 2 * n), dtype=torch.int32, generator=g)
    xscale = (torch.rand(rows, 1, generator=g) + 0.1) / 127
    wscale = (torch.rand(2 * n, generator=g) + 0.1) / 127 * 0.05
    return sums, xscale, wscale


@needs_compiler
@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "silu"])
@pytest.mark.parametrize("block", [1, 16])
def test_loop_equals_the_tensor_operations(act, block):
    """Same scales (to rounding) and the same int8 values but for rare rounding ties of its
    own exp: one value in 10,000 may differ, by 1."""
    op = operator(act)
    assert op is not None, "a C++ compiler is installed, yet the loop was not built"
    sums, xscale, wscale = _inputs(300, 2048)
    q, scale = op(sums, xscale, wscale, ACTIVATIONS[act], block)
    ref_q, ref_scale = glu_quantize_reference(
        sums, xscale, wscale, activation(act, compiled=True), block
    )
    assert q.dtype == torch.int8 and q.shape == ref_q.shape == (300, 2048)
    torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=0)
    diff = (q.int() - ref_q.int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 1e-4
    assert int(ref_q.abs().max()) == 127  # the test exercises the whole int8 range


@needs_compiler
def test_each_row_alone_and_under_compile():
    """A row's values do not depend on the other rows (bitwise, whatever the thread split), and
    the operator gives the same values inside a compiled function of dynamic shape."""
    op = operator("silu")
    sums, xscale, wscale = _inputs(257, 512, seed=1)
    q, scale = op(sums, xscale, wscale, 1, 16)
    for lo, hi in ((0, 1), (5, 140), (200, 257)):
        part_q, part_scale = op(sums[lo:hi], xscale[lo:hi], wscale, 1, 16)
        assert torch.equal(part_q, q[lo:hi]) and torch.equal(part_scale, scale[lo:hi])
    fn = torch.compile(lambda s, x: op(s, x, wscale, 1, 16), dynamic=True)
    for rows in (257, 31):
        got_q, got_scale = fn(sums[:rows], xscale[:rows])
        assert torch.equal(got_q, q[:rows]) and torch.equal(got_scale, scale[:rows])


def test_no_loop_when_compiling_is_off_or_the_activation_unknown(monkeypatch):
    """CROSSRANK_COMPILE=0 (or no compiler) and activations the loop lacks: no operator, the
    tensor operations run."""
    assert operator("gelu") is None  # erf GELU: not in the loop
    monkeypatch.setenv("CROSSRANK_COMPILE", "0")
    assert operator("silu") is None


def test_vector_flags_follow_cpuid(monkeypatch):
    """AVX-512 where CPUID has it, else AVX2 + FMA, else none (never -march=native: the
    compiler may run on another CPU than the one the process sees, as under qemu)."""
    import crossrank.cpu

    monkeypatch.setattr(crossrank.cpu, "is_x86", lambda: True)
    for features, want in (
        ({"avx2", "avx512"}, "-mavx512f"),
        ({"avx2"}, "-mavx2"),
        (set(), None),
    ):
        monkeypatch.setattr(crossrank.cpu, "cpu_features", lambda f=features: frozenset(f))
        flags = int8_kernel.isa_flags()
        assert (flags[0] if flags else None) == want
        assert "-mavx512f" not in flags or "avx512" in features
