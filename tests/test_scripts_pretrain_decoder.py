"""scripts/pretrain_decoder.py (next-token pretraining before `crossrank train`): its loss is
transformers' causal-LM loss on the same checkpoint, and a short run writes a checkpoint of the
same family that crossrank loads, with weights that moved."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from oracle import hf_llm_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_decoder.py"
TEXTS = [
    "Real-time strategy game of ancient warfare",
    "free, open-source, cross-platform real-time strategy game",
    "library for reading and writing compressed archives",
    "command-line tool to compress and extract archives",
]


def _script():
    spec = importlib.util.spec_from_file_location("pretrain_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lm_loss_equals_transformers(gemma_dir):
    from transformers import GemmaForCausalLM

    from crossrank.families import load_decoder

    tok = hf_llm_tokenizer(gemma_dir)
    rows = [tok(text)["input_ids"] for text in TEXTS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    assert mask.sum() < mask.numel(), "rows of different lengths, so padding is tested"
    with torch.no_grad():
        ours = _script().lm_loss(load_decoder(gemma_dir), ids, mask.bool())
        ref = GemmaForCausalLM.from_pretrained(str(gemma_dir)).eval()
        theirs = ref(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    assert abs(ours.item() - theirs.loss.item()) < 1e-4


def test_short_run_writes_a_loadable_checkpoint(gemma_dir, tmp_path):
    from crossrank import Reranker

    data = tmp_path / "train.jsonl"
    with data.open("w") as fh:
        for i, text in enumerate(TEXTS):
            fh.write(
                json.dumps({"query": text.split(",")[0], "pos": [text], "neg": [TEXTS[i - 1]]})
            )
            fh.write("\n")
    out = tmp_path / "lm"
    cmd = [sys.executable, str(SCRIPT), str(gemma_dir), str(data), str(out), "--steps", "5"]
    done = subprocess.run(cmd + ["--batch-size", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "5 steps" in done.stdout
    written = json.loads((out / "config.json").read_text())
    assert written.pop("torch_dtype") == "float32"  # the one writer records the saved dtype
    assert written == {
        k: v
        for k, v in json.loads((gemma_dir / "config.json").read_text()).items()
        if k != "torch_dtype"
    }
    before, after = load_file(gemma_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(after) <= set(before)  # Hugging Face names; the tied head is not written twice
    assert not torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    scores = Reranker(out, device="cpu").compute_score([[TEXTS[0], TEXTS[1]]])
    assert torch.isfinite(torch.tensor(scores)).all()
