"""The decoders' int8 products (``quantize="int8"``, crossrank.models.int8): exact integer sums,
rows quantized alone, the Hadamard rotation of the MLP's inputs, loading without fp32 weights,
and scores close to fp32 for every decoder family. In the isa set: run under an emulated
AVX2-only CPU too (scripts/test-isa.sh), where oneDNN takes its non-VNNI int8 kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crossrank import Reranker
from crossrank.engine.calibrate import spearman
from crossrank.errors import CrossrankError
from crossrank.models.int8 import (
    Int8Linear,
    hadamard,
    quantize_weight,
    rotation_block,
)

pytestmark = pytest.mark.isa

DECODERS = ["gemma_dir", "minicpm_dir", "qwen3_dir", "qwen3_untied_dir"]
QUERIES = ["how do I install a web server", "tool to resize images", "zip files"]
PASSAGES = [
    "nginx is a small and fast web server",
    "apache2 is the Apache HTTP server, with modules for almost everything one could need",
    "imagemagick converts, resizes and edits images from the command line",
    "gzip",
    "p7zip: 7z archiver with high compression ratio, reads zip and many other formats",
    "a library of small utilities",
    "vim, the text editor",
    "curl transfers data from or to a server",
]
PAIRS = [[q, p] for q in QUERIES for p in PASSAGES]


def _heavy_tailed(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Activations like a gated MLP's ``act(gate) * up``: most values small, a few large."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(rows, cols, generator=g), torch.randn(rows, cols, generator=g)
    return torch.nn.functional.gelu(a * 2) * b


def test_one_pass_equals_the_integer_reference():
    """The int8 product is an exact integer sum (no 16-bit saturation on any instruction set):
    the output equals int64 arithmetic on the same quantized values, up to the fp32 scaling."""
    torch.manual_seed(0)
    w, b = torch.randn(48, 96) * 0.05, torch.randn(48)
    x = torch.randn(7, 96) * 3
    x[0, 5] = 40.0  # a row with an outlier: |q| reaches 127 there
    lin = Int8Linear.from_float(w, b)
    qw, ws = quantize_weight(w)
    scale = x.abs().amax(dim=1, keepdim=True) / 127.0
    qx = torch.round(x / scale)
    assert qx.abs().max() == 127
    exact = (qx.long() @ qw.long().T).double() * scale.double() * ws.double() + b.double()
    torch.testing.assert_close(lin(x).double(), exact, rtol=1e-6, atol=1e-6)


def test_each_row_is_quantized_alone():
    """A row's output does not depend on the other rows of its batch: bitwise, since the
    integer sums are exact and the scales are per row."""
    x = _heavy_tailed(33, 128)
    for rotation in (1, 16):
        lin = Int8Linear.from_float(torch.randn(64, 128) * 0.05, rotation=rotation)
        full = lin(x)
        for i in (0, 7, 32):
            assert torch.equal(lin(x[i : i + 1]), full[i : i + 1])
        assert torch.equal(lin(x[5:20]), full[5:20])


def test_hadamard_is_orthonormal_and_mixes_strided_groups():
    """The rotation is an orthonormal Walsh-Hadamard matrix: its own inverse, norm-preserving,
    each value mixed with the ``block - 1`` others ``n / block`` apart only, all with weight
    ``block ** -0.5``."""
    torch.manual_seed(1)
    x = torch.randn(5, 96, dtype=torch.float64)
    for block in (2, 4, 16, 32):
        y = hadamard(x, block)
        torch.testing.assert_close(hadamard(y, block), x)
        torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1))
    h = hadamard(torch.eye(32, dtype=torch.float64), 16)  # groups: values 2 apart
    same_group = torch.arange(32)[:, None] % 2 == torch.arange(32)[None, :] % 2
    assert torch.count_nonzero(h[~same_group]) == 0
    torch.testing.assert_close(h[same_group].abs(), torch.full((512,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(h, h.T)
    assert [rotation_block(n) for n in (2048, 96, 40, 7)] == [16, 16, 8, 1]


def test_rotation_spreads_the_heavy_tail():
    """On heavy-tailed activations one plain int8 pass loses the small values' bits (a few large
    ones set the row's scale); rotated first, the same int8 product errs much less, and the
    rotation itself changes nothing: the float products of the rotated input and weight equal
    the plain ones."""
    torch.manual_seed(1)
    w = torch.randn(256, 512) * 0.02
    x = _heavy_tailed(64, 512)
    ref = x @ w.T
    torch.testing.assert_close(hadamard(x, 16) @ hadamard(w, 16).T, ref, atol=1e-4, rtol=1e-4)
    err = {
        r: float((Int8Linear.from_float(w, rotation=r)(x) - ref).norm() / ref.norm())
        for r in (1, 16)
    }
    assert err[1] < 0.03
    assert err[16] < 0.75 * err[1], err  # measured: 0.017 -> 0.011


def test_fused_products_equal_the_separate_ones():
    """q|k|v and gate|up as one product: the same outputs, bitwise (rows quantized alone)."""
    from crossrank.models.int8 import _concat

    torch.manual_seed(2)
    parts = [Int8Linear.from_float(torch.randn(n, 64) * 0.1, torch.randn(n)) for n in (32, 8, 8)]
    x = torch.randn(3, 5, 64)
    fused = _concat(parts)(x).split([32, 8, 8], dim=-1)
    for part, got in zip(parts, fused):
        assert torch.equal(part(x), got)


def test_input_is_never_modified():
    x = _heavy_tailed(4, 64)
    before = x.clone()
    Int8Linear.from_float(torch.randn(16, 64), rotation=16)(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("fixture", DECODERS)
def test_decoder_int8_is_close_to_fp32_and_holds_no_fp32_weights(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    exact = Reranker(model_dir, device="cpu", show_progress=False)
    rr = Reranker(model_dir, device="cpu", quantize="int8", show_progress=False)
    layers = rr.model.model.layers
    assert not any(isinstance(m, nn.Linear) for m in layers.modules())
    int8 = [m for m in layers.modules() if isinstance(m, Int8Linear)]
    assert len(int8) == 4 * len(layers)  # q|k|v, o, gate|up, down
    assert all(m.qweight.dtype == torch.int8 for m in int8)
    assert sorted({m.rotation for m in int8}) == [1, 16]  # the MLPs rotated

    a = np.asarray(exact.compute_score(PAIRS), dtype=np.float64)
    b = np.asarray(rr.compute_score(PAIRS), dtype=np.float64)
    spread = a.std()
    assert spread > 0
    # tiny random models (hidden 64) are the hard case: 10-20 % of the spread measured here
    assert np.abs(a - b).max() < 0.3 * spread
    n = len(PASSAGES)
    rhos = [spearman(a[i * n : (i + 1) * n], b[i * n : (i + 1) * n]) for i in range(len(QUERIES))]
    # 8 passages: one swap of neighbours costs 0.024 (measured at worst: Qwen3, 0.976 / 1 /
    # 0.952)
    assert min(rhos) >= 0.9 and np.mean(rhos) >= 0.95
    assert rr.options.quantize == "int8"


def test_int8_refuses_what_it_does_not_run(gemma_dir, bert_dir):
    with pytest.raises(CrossrankError, match="fp32"):
        Reranker(gemma_dir, device="cpu", quantize="int8", dtype="bf16")
    with pytest.raises(CrossrankError, match="backend='onnx'"):  # encoders: ONNX's int8
        Reranker(bert_dir, device="cpu", quantize="int8")
    # a quantization no decoder runs (past the options' check): the user's, not the model's
    from crossrank.config import read_config
    from crossrank.errors import ModelLoadError
    from crossrank.families import family_for
    from crossrank.families.base import Runtime

    raw = read_config(gemma_dir / "config.json")
    family = family_for(raw)
    runtime = Runtime(torch.device("cpu"), torch.float32, "torch", "int4")
    with pytest.raises(CrossrankError, match="unknown quantize 'int4'") as info:
        family.load(gemma_dir, family.parse_config(raw), runtime)
    assert not isinstance(info.value, ModelLoadError)
