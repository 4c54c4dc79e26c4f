"""Tensor-name mapping between Hugging Face checkpoints and our modules."""

from __future__ import annotations

import numpy as np
import torch

from crossrank.config import EncoderConfig
from crossrank.models import load_cross_encoder
from crossrank.models.weights import hf_to_ours, ours_to_hf


def test_round_trip_into_transformers(xlmr_dir, bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    for model_dir in (xlmr_dir, bert_dir):
        ours = load_cross_encoder(model_dir)
        hf = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
        converted = ours_to_hf(ours.state_dict(), ours.config)
        reference = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
        assert set(converted) == set(reference)
        for k, v in reference.items():
            assert torch.equal(converted[k], v), k


def test_legacy_names_and_unused_tensors():
    cfg = EncoderConfig.from_dict(
        {
            "architectures": ["BertForSequenceClassification"],
            "vocab_size": 10,
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
        }
    )
    assert hf_to_ours("bert.embeddings.LayerNorm.gamma", cfg) == (
        "encoder.embeddings.LayerNorm.weight",
        None,
    )
    assert hf_to_ours("bert.encoder.layer.0.attention.self.key.bias", cfg) == (
        "encoder.layers.0.qkv.bias",
        1,
    )
    assert hf_to_ours("bert.pooler.dense.weight", cfg) == ("head.dense.weight", None)
    assert hf_to_ours("classifier.weight", cfg) == ("head.out_proj.weight", None)
    assert hf_to_ours("cls.predictions.bias", cfg) is None


def test_bf16_load_casts_while_streaming(bert_dir):
    model = load_cross_encoder(bert_dir, dtype=torch.bfloat16)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.bfloat16}
    ids = torch.tensor([[2, 10, 11, 3]])
    with torch.no_grad():
        out = model(ids, torch.ones_like(ids))
    assert out.shape == (1,) and np.isfinite(out.float().numpy()).all()


def test_saved_weights_get_the_usual_file_mode(tmp_path):
    """Weights are written atomically and readable like any other file (umask 022: 0644)."""
    import os

    from crossrank.models.weights import save_safetensors

    old = os.umask(0o022)
    try:
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "model.safetensors.tmp").exists()


def test_private_reads_equal_the_mapped_file(tmp_path):
    """iter_tensors(private=True) reads each tensor into its own buffer (converting loads):
    the same names, dtypes, shapes and values as the memory-mapped read, every dtype."""
    from safetensors.torch import save_file

    from crossrank.models.weights import iter_tensors

    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.f32": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(7, generator=g).bfloat16(),
        "c.f16": torch.randn(2, 2, 2, generator=g).half(),
        "d.i64": torch.arange(6).reshape(2, 3),
        "e.i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "f.bool": torch.tensor([True, False]),
        "g.scalar": torch.tensor(2.5),
        "h.empty": torch.zeros(0, 4),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    mapped = dict(iter_tensors([path]))
    private = dict(iter_tensors([path], private=True))
    assert sorted(private) == sorted(mapped) == sorted(tensors)
    for name, want in tensors.items():
        got = private[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.equal(got, want) and torch.equal(mapped[name], want), name
    private["a.f32"].add_(1)  # its own memory: writable, the file unchanged
    assert torch.equal(dict(iter_tensors([path]))["a.f32"], tensors["a.f32"])
