"""crossrank train for the Qwen3-Reranker and ModernBERT families: full fine-tuning writes a
checkpoint that transformers (ModernBERT) and crossrank load with the same scores; Qwen3 LoRA
adapters load onto the base, ``--merge`` writes the same model, the converted
sequence-classification form keeps its ``score.weight`` head; per-example prompts are Qwen3's
task instruction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from crossrank import Reranker
from crossrank.testing import TOPICS, write_groups
from crossrank.train.trainer import train
from test_train_decoder import dcfg

PAIRS = [(f"what is {t}?", text) for t, _ in TOPICS[:3] for _, text in TOPICS[:3]]


def test_modernbert_full_fine_tuning_round_trip(tmp_path, modernbert_dir):
    from transformers import AutoTokenizer, ModernBertForSequenceClassification

    data = write_groups(tmp_path / "train.jsonl")
    out = tmp_path / "mb"
    before = Reranker(modernbert_dir, device="cpu").compute_score(PAIRS)
    train(dcfg(tmp_path, modernbert_dir, data, "mb", lr=1e-3, max_steps=3))
    ours = Reranker(out, device="cpu", max_length=128)
    after = np.array(ours.compute_score(PAIRS))
    assert np.abs(after - before).max() > 1e-3  # it trained
    tok = AutoTokenizer.from_pretrained(str(out))
    ref = ModernBertForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        enc = tok([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, return_tensors="pt")
        want = ref(**enc).logits[:, 0].numpy()
    assert np.abs(after - want).max() < 1e-4


def test_qwen3_lora_adapter_and_merge(tmp_path, qwen3_dir):
    path = write_groups(tmp_path / "d.jsonl")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    rows[0]["prompt"] = "Judge whether the package description answers the question"
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = np.array(Reranker(qwen3_dir, device="cpu").compute_score(PAIRS))
    kw = dict(lr=5e-3, max_steps=3, lora_rank=4, query_max_length=64, passage_max_length=64)
    train(dcfg(tmp_path, qwen3_dir, str(data), "adapter", **kw))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    adapted = np.array(Reranker(tmp_path / "adapter", device="cpu").compute_score(PAIRS))
    assert np.abs(adapted - base).max() > 1e-4  # the adapter changes the scores
    train(dcfg(tmp_path, qwen3_dir, str(data), "merged", merge=True, **kw))
    merged = np.array(Reranker(tmp_path / "merged", device="cpu").compute_score(PAIRS))
    assert np.abs(merged - adapted).max() < 1e-4  # same training, merged into the weights


def test_qwen3_converted_form_keeps_its_head_name(tmp_path, qwen3_seqcls_dir):
    from safetensors import safe_open

    data = write_groups(tmp_path / "train.jsonl")
    kw = dict(lr=1e-3, max_steps=2, query_max_length=64, passage_max_length=64)
    train(dcfg(tmp_path, qwen3_seqcls_dir, data, "out", **kw))
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "score.weight" in names and "head.weight" not in names
    rr = Reranker(tmp_path / "out", device="cpu")
    assert rr.family.name == "qwen3" and len(rr.compute_score(PAIRS)) == len(PAIRS)
