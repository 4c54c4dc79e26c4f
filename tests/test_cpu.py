"""CPU features as the kernels see them (CPUID), and the int8 format chosen from them."""

from __future__ import annotations

import os

import pytest

from crossrank.cpu import INT8_UNITS, cpu_features, describe, int8_scheme, is_x86
from crossrank.errors import CrossrankError

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

KNOWN = {"avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"}


@pytest.mark.parametrize(
    ("features", "x86", "want"),
    [
        ({"avx2"}, True, "u8u8"),  # Zen 3, Haswell...: vpmaddubsw saturates
        ({"avx2", "avx512"}, True, "u8u8"),  # Skylake-X: AVX-512 without VNNI saturates too
        ({"avx2", "avx512", "avx512_vnni"}, True, "u8s8"),  # Cascade Lake, Zen 4
        ({"avx2", "avx512", "avx512_vnni", "amx"}, True, "u8s8"),  # Sapphire Rapids
        (set(), False, "u8s8"),  # ARM: sdot / udot do not saturate
    ],
)
def test_int8_scheme_by_cpu_class(features, x86, want, monkeypatch):
    monkeypatch.delenv("CROSSRANK_INT8_SCHEME", raising=False)
    assert int8_scheme(features, x86=x86) == want


def test_int8_scheme_can_be_forced_to_the_portable_format(monkeypatch):
    monkeypatch.setenv("CROSSRANK_INT8_SCHEME", "u8u8")
    assert int8_scheme({"avx2", "avx512", "avx512_vnni"}, x86=True) == "u8u8"
    monkeypatch.setenv("CROSSRANK_INT8_SCHEME", "u8s8")
    with pytest.raises(CrossrankError, match="saturates"):
        int8_scheme({"avx2"}, x86=True)
    monkeypatch.setenv("CROSSRANK_INT8_SCHEME", "int4")
    with pytest.raises(CrossrankError, match="int4"):
        int8_scheme({"avx2"}, x86=True)


def test_features_are_the_kernels_view():
    """What torch's CPUID reader reports, consistently: AVX-512 extensions only with AVX-512,
    AVX-512 only with AVX2; the scheme follows."""
    feats = cpu_features()
    assert feats <= KNOWN
    if feats & {"avx512_vnni", "avx512_bf16"}:
        assert "avx512" in feats
    if "avx512" in feats:
        assert "avx2" in feats
    if is_x86() and not os.environ.get("CROSSRANK_INT8_SCHEME"):
        assert int8_scheme() == ("u8s8" if feats & INT8_UNITS else "u8u8")
    assert describe().strip()


@pytest.mark.skipif(
    "CROSSRANK_EXPECT_FEATURES" not in os.environ,
    reason="set CROSSRANK_EXPECT_FEATURES (scripts/test-isa.sh does) to check an emulated CPU",
)
def test_the_emulated_cpu_is_the_one_asked_for():
    """Under ``qemu-x86_64 -cpu Haswell`` (scripts/test-isa.sh) the kernels must see AVX2 and
    nothing more, whatever the host has: otherwise the ISA run tested the host's paths."""
    want = set(filter(None, os.environ["CROSSRANK_EXPECT_FEATURES"].split(",")))
    assert set(cpu_features()) == want


def test_features_can_be_hidden(monkeypatch):
    """CROSSRANK_DISABLE_FEATURES: how a CPU without bf16 units is measured on one with them."""
    real = cpu_features()
    monkeypatch.setenv("CROSSRANK_DISABLE_FEATURES", "avx512_bf16, amx")
    cpu_features.cache_clear()
    try:
        assert cpu_features() == real - {"avx512_bf16", "amx"}
        monkeypatch.setenv("CROSSRANK_DISABLE_FEATURES", "avx512_bf16,sse9")
        cpu_features.cache_clear()
        with pytest.raises(CrossrankError, match="unknown feature.*sse9"):
            cpu_features()
    finally:
        monkeypatch.delenv("CROSSRANK_DISABLE_FEATURES")
        cpu_features.cache_clear()
    assert cpu_features() == real
