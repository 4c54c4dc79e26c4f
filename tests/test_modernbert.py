"""Our ModernBERT cross-encoder against transformers' ModernBertForSequenceClassification on
tiny checkpoints, with inputs longer than the sliding window."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from crossrank.testing import CORPUS

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

LONG = " ".join(CORPUS * 3)
PAIRS = [
    ("what is panda?", "hi"),
    ("what is panda?", "The giant panda is a bear species endemic to China."),
    ("debian", LONG),  # far longer than the window (16 tokens) and cut to max_length
    ("Was ist ein Fuchs?", "Der schnelle braune Fuchs springt über den faulen Hund."),
    ("x", ""),
    ("rerank " * 3, "search engines rank documents; " * 5),
]


def encoded(model_dir, max_length=200):
    from crossrank.engine.tokenize import PairTokenizer, load_tokenizer

    pt = PairTokenizer(load_tokenizer(model_dir), max_length=max_length)
    return [e.ids for e in pt.encode(PAIRS)]


def padded(ids_list, pad_id=0):
    seq = max(len(x) for x in ids_list)
    ids = torch.full((len(ids_list), seq), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(ids_list):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


def hf_logits(model_dir, ids, mask, attn="sdpa"):
    from transformers import ModernBertForSequenceClassification

    model = ModernBertForSequenceClassification.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation=attn
    ).eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[:, 0]


@pytest.mark.parametrize("fixture", ["modernbert_dir", "modernbert_mean_dir"])
def test_modernbert_matches_transformers(request, fixture):
    from crossrank.models.modernbert import load_modernbert

    model_dir = request.getfixturevalue(fixture)
    ids_list = encoded(model_dir)
    assert max(len(x) for x in ids_list) > 100, "inputs must exceed the sliding window"
    ids, mask = padded(ids_list)
    model = load_modernbert(model_dir)
    with torch.no_grad():
        ours = model(ids, mask)
    ref = hf_logits(model_dir, ids, mask)
    assert ref.std() > 0.1, "scores must vary for the test to bite"
    diff = (ours - ref).abs().max().item()
    print(f"{fixture}: modernbert parity max abs diff {diff:.2e}")
    assert diff < 1e-4
    # eager attention in the reference agrees too, and each row alone gives its batch score
    assert (hf_logits(model_dir, ids, mask, "eager") - ref).abs().max().item() < 1e-4
    with torch.no_grad():
        alone = torch.cat([model(*padded([x])) for x in ids_list])
    assert (alone - ours).abs().max().item() < 1e-5


def test_window_matters(modernbert_dir, tmp_path):
    """A checkpoint whose window covers every input scores differently: the window is real."""
    from crossrank.models.modernbert import load_modernbert

    wide = tmp_path / "wide"
    shutil.copytree(modernbert_dir, wide)
    raw = json.loads((wide / "config.json").read_text())
    raw["local_attention"] = 4096
    (wide / "config.json").write_text(json.dumps(raw))
    ids, mask = padded(encoded(modernbert_dir))
    with torch.no_grad():
        narrow_scores = load_modernbert(modernbert_dir)(ids, mask)
        wide_scores = load_modernbert(wide)(ids, mask)
    assert (wide_scores - hf_logits(wide, ids, mask)).abs().max().item() < 1e-4
    assert (wide_scores - narrow_scores).abs().max().item() > 1e-3


def test_legacy_config_fields(modernbert_dir):
    """Hub configs written by transformers 4 name global_attn_every_n_layers and the two rope
    thetas instead of layer_types / rope_parameters: both parse to the same model."""
    from crossrank.config import read_config
    from crossrank.models.modernbert import ModernBertConfig

    raw = read_config(modernbert_dir / "config.json")
    new = ModernBertConfig.from_dict(raw)
    legacy = {k: v for k, v in raw.items() if k not in ("layer_types", "rope_parameters")}
    legacy.update(global_rope_theta=2000.0, local_rope_theta=500.0)
    old = ModernBertConfig.from_dict(legacy)
    assert old == new
    assert new.layer_types == (
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    )
    assert (new.global_rope_theta, new.local_rope_theta, new.window) == (2000.0, 500.0, 8)


def test_bad_checkpoints_are_clear_errors(modernbert_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from crossrank.errors import ModelLoadError, UnsupportedModelError
    from crossrank.models.modernbert import ModernBertConfig, load_modernbert

    bad = tmp_path / "bad"
    shutil.copytree(modernbert_dir, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop("head.norm.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="head.norm.weight"):
        load_modernbert(bad)
    raw = json.loads((modernbert_dir / "config.json").read_text())
    with pytest.raises(UnsupportedModelError, match="pooling"):
        ModernBertConfig.from_dict({**raw, "classifier_pooling": "max"})
    with pytest.raises(UnsupportedModelError, match="labels"):
        ModernBertConfig.from_dict({**raw, "num_labels": 2, "id2label": {"0": "a", "1": "b"}})


def test_grouped_kernel_on_global_layers_is_exact(modernbert_dir):
    """The varlen path (here the CPU "grouped" kernel) gives the padded path's scores."""
    from crossrank.models.modernbert import load_modernbert

    ids, mask = padded(encoded(modernbert_dir))
    model = load_modernbert(modernbert_dir)
    with torch.no_grad():
        ref = model(ids, mask)
        model.model.attention = "grouped"
        got = model(ids, mask)
    assert (got - ref).abs().max().item() < 1e-5
