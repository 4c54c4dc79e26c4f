"""The bundled reranker: small fp16 HF checkpoint, loads by name, same scores as transformers."""

from __future__ import annotations

import json

from crossrank.bundled import EXAMPLE_DIR, MINILM_DEBIAN, MINILM_DEBIAN_MAX_LENGTH


def test_bundle_is_small_fp16_and_complete():
    names = {p.name for p in MINILM_DEBIAN.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in MINILM_DEBIAN.iterdir()) < 50 * 2**20
    conf = json.loads((MINILM_DEBIAN / "config.json").read_text())
    assert conf["architectures"] == ["BertForSequenceClassification"]
    from safetensors import safe_open

    with safe_open(str(MINILM_DEBIAN / "model.safetensors"), framework="pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"torch.float16"}


def reference_fp32(model_dir, pairs, max_length):
    """transformers' scores with the fp16 weights upcast to fp32 (as our loader does)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from oracle import hf_tokenizer, reference_inputs

    tok = hf_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32)
    batch = tok.pad(reference_inputs(tok, pairs, max_length), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.view(-1).tolist()


def test_bundled_model_loads_by_name_and_matches_transformers():
    from crossrank import Reranker

    docs = [
        json.loads(x)["text"] for x in (EXAMPLE_DIR / "documents.jsonl").read_text().splitlines()
    ]
    query = (EXAMPLE_DIR / "query.txt").read_text().strip()
    pairs = [(query, d) for d in docs]
    rr = Reranker("crossrank/minilm-debian", device="cpu", max_length=MINILM_DEBIAN_MAX_LENGTH)
    assert rr.model_dir == MINILM_DEBIAN
    ours = rr.compute_score(pairs)
    ref = reference_fp32(MINILM_DEBIAN, pairs, MINILM_DEBIAN_MAX_LENGTH)
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-4
    # the model has learned the task: the three download tools beat the rest
    top3 = {
        json.loads(x)["id"]
        for x in [
            (EXAMPLE_DIR / "documents.jsonl").read_text().splitlines()[r.index]
            for r in rr.rank(query, docs)[:3]
        ]
    }
    assert top3 == {"wget", "curl", "aria2"}


def test_the_bundled_models_language_is_stated_where_it_is_offered(capsys):
    """English only: in every command's --model help, crossrank.hub's docs and the listing of
    bundled models (not only its model card)."""
    import pytest

    import crossrank.hub
    from crossrank.bundled import LANGUAGES, MODELS
    from crossrank.cli import main

    assert set(LANGUAGES) == set(MODELS) and LANGUAGES["crossrank/minilm-debian"] == "English only"
    assert "English only" in (crossrank.hub.__doc__ or "")
    for command in ("score", "rank", "eval", "serve", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "English only" in text, command
