"""Reranker loads PEFT LoRA adapters: an adapter directory as the model, or base + adapter=."""

from __future__ import annotations

import pytest
import torch

from crossrank.testing import write_groups
from oracle import hf_llm_tokenizer, reference_llm_inputs, yes_id

PAIRS = [
    ("what is panda?", "The giant panda is a bear that eats bamboo."),
    ("what is panda?", "Debian is a free operating system."),
    ("what is debian?", "Debian is a free operating system for your computer."),
]


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory, gemma_dir):
    """An adapter trained by real peft on transformers' Gemma (random B: not a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GemmaForCausalLM

    torch.manual_seed(2)
    base = GemmaForCausalLM.from_pretrained(gemma_dir, torch_dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     init_lora_weights=False)  # fmt: skip
    model = get_peft_model(base, cfg).eval()
    out = tmp_path_factory.mktemp("adapter") / "peft"
    model.save_pretrained(str(out))
    return out, model


def reference(model, gemma_dir) -> list[float]:
    tok = hf_llm_tokenizer(gemma_dir)
    with torch.no_grad():
        return [
            model(input_ids=torch.tensor([ids])).logits[0, -1, yes_id(tok)].item()
            for ids in reference_llm_inputs(tok, PAIRS)
        ]


def test_adapter_dir_as_model_and_as_argument_score_like_peft(peft_adapter, gemma_dir):
    from crossrank import Reranker

    adapter, peft_model = peft_adapter
    ref = reference(peft_model, gemma_dir)
    by_dir = Reranker(adapter, device="cpu").compute_score(PAIRS)
    by_arg = Reranker(gemma_dir, adapter=adapter, device="cpu").compute_score(PAIRS)
    plain = Reranker(gemma_dir, device="cpu").compute_score(PAIRS)
    assert max(abs(a - b) for a, b in zip(by_dir, ref)) < 1e-4
    assert by_arg == by_dir
    assert max(abs(a - b) for a, b in zip(plain, ref)) > 1e-3


def test_a_crossrank_trained_adapter_loads_in_reranker(tmp_path, gemma_dir):
    from crossrank import Reranker
    from crossrank.families import load_decoder
    from crossrank.models.adapters import apply_adapter
    from crossrank.train.trainer import TrainConfig, train

    data = write_groups(tmp_path / "d.jsonl")
    train(TrainConfig(model=str(gemma_dir), data=data, output=str(tmp_path / "o"), group_size=4,
                      batch_size=4, max_steps=2, lr=1e-2, lora_rank=4, device="cpu",
                      show_progress=False))  # fmt: skip
    scores = Reranker(tmp_path / "o", device="cpu").compute_score(PAIRS)
    tok = hf_llm_tokenizer(gemma_dir)
    model = apply_adapter(load_decoder(gemma_dir), tmp_path / "o")
    with torch.no_grad():
        want = [
            model.score(torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long),
                        token_ids=[yes_id(tok)]).item()
            for x in reference_llm_inputs(tok, PAIRS)
        ]  # fmt: skip
    assert max(abs(a - b) for a, b in zip(scores, want)) < 1e-4


def test_adapter_errors(tmp_path, peft_adapter, bert_dir, gemma_dir):
    from crossrank import Reranker
    from crossrank.errors import CrossrankError

    adapter, _ = peft_adapter
    with pytest.raises(CrossrankError, match="LLM families"):
        Reranker(bert_dir, adapter=adapter, device="cpu")
    with pytest.raises(CrossrankError, match="not a PEFT adapter"):
        Reranker(gemma_dir, adapter=tmp_path, device="cpu")
    with pytest.raises(CrossrankError, match="cannot load onto int8 layers"):
        Reranker(gemma_dir, adapter=adapter, device="cpu", quantize="int8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"r": 8}, r"adapter_config.json: r is 8 for .*_proj, but its lora_A / lora_B tensors "
                   r"have rank 4 / 4"),
        ({"rank_pattern": {"v_proj": 2}}, r"r is 2 for .*v_proj"),
        ({"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"]},
         r"adapter_config.json: target_modules .* names linears the adapter has no tensors for: "
         r"model.layers.0.mlp.gate_proj"),
        ({"target_modules": ["q_proj", "k_proj", "v_proj"]},
         r"does not name linears the adapter has tensors for: model.layers.0.self_attn.o_proj"),
        ({"layers_to_transform": [0]}, r"does not name linears .*layers.1"),
        ({"base_model_name_or_path": "/nonexistent/base"},
         r"adapter_config.json: its base model '/nonexistent/base' .* does not exist"),
    ],
)  # fmt: skip
def test_an_adapter_config_that_contradicts_its_tensors_is_refused(
    tmp_path, peft_adapter, gemma_dir, change, message
):
    """What PEFT refuses (or, for target_modules, loads silently with layers left unadapted) is
    one ModelLoadError naming adapter_config.json."""
    import json
    import shutil

    from crossrank import Reranker
    from crossrank.errors import ModelLoadError

    adapter, _ = peft_adapter
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    conf = json.loads((bad / "adapter_config.json").read_text())
    conf.update(change)
    (bad / "adapter_config.json").write_text(json.dumps(conf))
    with pytest.raises(ModelLoadError, match=message):
        Reranker(bad, device="cpu") if "base_model_name_or_path" in change else Reranker(
            gemma_dir, adapter=bad, device="cpu"
        )


def test_cli_scores_with_an_adapter_directory_as_the_model(tmp_path, peft_adapter, gemma_dir):
    import json
    import subprocess
    import sys

    from crossrank import Reranker

    adapter, _ = peft_adapter
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS))
    out = tmp_path / "out.jsonl"
    res = subprocess.run(
        [sys.executable, "-m", "crossrank", "score", "-m", str(adapter), "--device", "cpu",
         "--input", str(src), "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    want = Reranker(gemma_dir, adapter=adapter, device="cpu").compute_score(PAIRS)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5


def test_eval_takes_an_adapter_directory_as_the_model(tmp_path, peft_adapter, gemma_dir):
    """`crossrank eval -m ADAPTER` reranks with base + adapter (it once refused the directory
    for having no config.json); the saved run holds the adapter's scores."""
    from pathlib import Path

    from crossrank import Reranker
    from crossrank.eval.beir import load_beir
    from test_eval_cli import TINY, crossrank

    adapter, _ = peft_adapter
    out, saved = tmp_path / "out.json", tmp_path / "rr.run"
    proc = crossrank(
        "--dataset", TINY, "--split", "test", "--model", adapter, "--first-stage", "bm25",
        "--top-k", "3", "--max-queries", "2", "--seed", "1", "--output", out,
        "--save-run", saved, "--device", "cpu",
        cache=Path(tmp_path / "cache"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ds = load_beir(TINY, "test")
    rr = Reranker(gemma_dir, adapter=adapter, device="cpu")
    pairs, got = [], []
    for line in saved.read_text().splitlines():  # the reranked top 3 (the rest keep BM25's order)
        qid, _, doc, rank, score, _ = line.split()
        if int(rank) <= 3:
            pairs.append((ds.queries[qid], ds.corpus[doc]))
            got.append(float(score))
    assert len(pairs) == 6
    want = rr.compute_score(pairs)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
