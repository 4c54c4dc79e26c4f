"""The activation table of every family (crossrank.models.activations): GELU-tanh in its
compiled form, and an activation no family supports is a clear UnsupportedModelError when the
model loads (encoders, decoders and ModernBERT alike)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crossrank import Reranker
from crossrank.errors import UnsupportedModelError
from crossrank.models.activations import activation, gelu_tanh_by_exp


def test_gelu_by_exp_is_gelu_tanh():
    x = torch.cat((torch.linspace(-12, 12, 100_001), torch.tensor([-1e4, -90.0, 90.0, 1e4])))
    ref = F.gelu(x.double(), approximate="tanh")
    got = gelu_tanh_by_exp(x).double()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() < 2e-6
    assert activation("gelu_pytorch_tanh", compiled=True) is gelu_tanh_by_exp
    assert activation("gelu_new", compiled=True) is gelu_tanh_by_exp
    assert activation("silu", compiled=True) is activation("silu")


@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("gelu", F.gelu),
        ("gelu_new", lambda x: F.gelu(x, approximate="tanh")),
        ("gelu_pytorch_tanh", lambda x: F.gelu(x, approximate="tanh")),
        ("relu", F.relu),
        ("silu", F.silu),
        ("swish", F.silu),
        ("tanh", torch.tanh),
    ],
)
def test_names_as_transformers_uses_them(name, ref):
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(activation(name)(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("fixture", "field"),
    [
        ("bert_dir", "hidden_act"),
        ("gemma_dir", "hidden_activation"),
        ("modernbert_dir", "hidden_activation"),
    ],
)
def test_an_unknown_activation_is_an_unsupported_model(fixture, field, request, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(request.getfixturevalue(fixture), model)
    config_path = Path(model, "config.json")
    config = json.loads(config_path.read_text())
    config[field] = "mish"
    config_path.write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="activation 'mish' is not supported"):
        Reranker(str(model), device="cpu")
