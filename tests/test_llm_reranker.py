"""The Reranker API and CLI on tiny decoder rerankers: exact scores (transformers' Gemma and the
hand-written MiniCPM reference as oracles), query-prefix sharing, cutoff layers."""

from __future__ import annotations

import copy
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from oracle import hf_llm_tokenizer, reference_llm_inputs

QUERIES = ["what is panda?", "Debian operating system"]
DOCS = [
    "The giant panda is a bear species endemic to China.",
    "hi",
    "Debian is a free operating system for your computer. " * 4,
    "pandas eat bamboo and live in the mountains",
    "search engines rank documents; cross-encoders rescore the top hundred candidates " * 2,
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
]
PAIRS = [(q, d) for q in QUERIES for d in DOCS]


def gemma_reference(model_dir, pairs, max_length=512):
    """FlagLLMReranker: reference inputs through transformers' GemmaForCausalLM, one by one."""
    from transformers import GemmaForCausalLM

    tok = hf_llm_tokenizer(model_dir)
    model = GemmaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    out = []
    with torch.no_grad():
        for ids in reference_llm_inputs(tok, pairs, max_length=max_length):
            out.append(model(input_ids=torch.tensor([ids])).logits[0, -1, yes].item())
    return np.array(out)


def test_reranker_picks_the_family_from_the_config(gemma_dir, minicpm_dir, bert_dir):
    from crossrank import Reranker

    enc = Reranker(bert_dir)
    assert type(enc) is Reranker and enc.family.name == "encoder"
    scores = enc.compute_score([["what is panda?", "a bear"], ["what is panda?", "hi"]])
    ranked = enc.rank("what is panda?", ["a bear", "hi"])
    assert [r.index for r in ranked] == sorted([0, 1], key=lambda i: -scores[i])
    gemma = Reranker(gemma_dir)
    assert type(gemma) is Reranker and gemma.family.name == "gemma"
    lw = Reranker(minicpm_dir)
    assert lw.family.name == "minicpm-layerwise" and lw.cutoff_layers == [4]
    assert enc.cutoff_layers is None and gemma.outputs == ("score",)
    assert type(copy.copy(lw)) is Reranker
    # one constructor for every family: help() and IDEs show its real arguments
    params = inspect.signature(Reranker).parameters
    assert {"max_length", "cutoff_layers", "prompt", "backend", "instruction"} <= set(params)


def test_gemma_reranker_matches_reference(gemma_dir):
    from crossrank import Reranker

    ref = gemma_reference(gemma_dir, PAIRS, max_length=24)
    rr = Reranker(gemma_dir, max_length=24, max_batch_tokens=200)
    got = np.array(rr.compute_score(PAIRS))
    diff = np.abs(got - ref).max()
    print(f"gemma reranker vs reference max abs diff {diff:.2e}")
    assert ref.std() > 0.5 and diff < 1e-4
    unshared = Reranker(gemma_dir, max_length=24, share_prefix=False)
    assert np.abs(np.array(unshared.compute_score(PAIRS)) - ref).max() < 1e-4
    single = rr.compute_score(list(PAIRS[0]))
    assert len(single) == 1 and abs(single[0] - ref[0]) < 1e-4
    norm = rr.compute_score(PAIRS[:3], normalize=True)
    assert np.allclose(norm, 1 / (1 + np.exp(-ref[:3])), atol=1e-5)
    ranked = rr.rank(QUERIES[0], DOCS)
    assert [r.index for r in ranked] == list(np.argsort(-ref[: len(DOCS)], kind="stable"))


def test_prefix_sharing_equals_unshared(gemma_dir, monkeypatch):
    from crossrank import Reranker
    from crossrank.models.gemma import GemmaForCausalLM

    calls = []
    original = GemmaForCausalLM.prefix_cache

    def counting(self, ids, mask, n_layers=None):
        calls.append(ids.shape[0])
        return original(self, ids, mask, n_layers)

    monkeypatch.setattr(GemmaForCausalLM, "prefix_cache", counting)
    shared = Reranker(gemma_dir, max_batch_tokens=400)
    unshared = Reranker(gemma_dir, max_batch_tokens=400, share_prefix=False)
    pairs = PAIRS * 3
    shared.backend.min_shared_fraction = 0.0  # share whatever is shared
    a = np.array(shared.compute_score(pairs))
    n_shared_calls = len(calls)
    b = np.array(unshared.compute_score(pairs))
    assert n_shared_calls > 0 and len(calls) == n_shared_calls  # only the shared path caches
    assert sum(calls) < len(pairs)  # fewer prefixes computed than pairs
    diff = np.abs(a - b).max()
    print(f"prefix sharing vs unshared max abs diff {diff:.2e}")
    assert diff < 1e-4


def test_layerwise_cutoffs_through_the_api(minicpm_dir, gemma_dir):
    from crossrank import Reranker
    from crossrank.errors import CrossrankError, InputError
    from test_minicpm import reference_scores

    tok = hf_llm_tokenizer(minicpm_dir)
    ids_list = reference_llm_inputs(tok, PAIRS, max_length=32, always_bos=True)
    ref = np.array(
        [[reference_scores(minicpm_dir, ids, [3, 1])[c] for c in (3, 1)] for ids in ids_list]
    )
    rr = Reranker(minicpm_dir, max_length=32, cutoff_layers=[3, 1], max_batch_tokens=300)
    rr.backend.min_shared_fraction = 0.0  # always share (compared with unshared below)
    got = rr.compute_layer_scores(PAIRS)
    assert list(got) == [3, 1] and all(len(col) == len(PAIRS) for col in got.values())
    diff = np.abs(np.array([got[3], got[1]]).T - ref).max()
    print(f"layerwise reranker vs reference max abs diff {diff:.2e}")
    assert diff < 1e-4
    # compute_score is always one flat list: the first cutoff layer's scores
    assert np.abs(np.array(rr.compute_score(PAIRS)) - ref[:, 0]).max() < 1e-4
    unshared = Reranker(minicpm_dir, max_length=32, cutoff_layers=[3, 1], share_prefix=False)
    again = unshared.compute_layer_scores(PAIRS)
    assert np.abs(np.array(again[1]) - np.array(got[1])).max() < 1e-4
    one = rr.compute_score(PAIRS, cutoff_layers=1)  # per-call override
    assert np.abs(np.array(one) - ref[:, 1]).max() < 1e-4
    per_call = rr.compute_layer_scores(PAIRS[:3], cutoff_layers=[1])
    assert list(per_call) == [1] and np.allclose(per_call[1], ref[:3, 1], atol=1e-4)
    ranked = rr.rank(QUERIES[0], DOCS)  # ranks by the first cutoff (3)
    assert [r.index for r in ranked] == list(np.argsort(-ref[: len(DOCS), 0], kind="stable"))
    assert rr.compute_score([]) == [] and rr.compute_layer_scores([]) == {3: [], 1: []}
    with pytest.raises(InputError, match="cutoff layers"):
        rr.compute_score(PAIRS[:1], cutoff_layers=[9])
    with pytest.raises(InputError, match="compute_layer_scores"):
        rr.compute_score(PAIRS[:1], cutoff_layers=[1, 3])
    with pytest.raises(CrossrankError, match="cutoff_layers"):
        Reranker(gemma_dir, cutoff_layers=[1])
    with pytest.raises(InputError, match="layerwise"):
        Reranker(gemma_dir).compute_layer_scores(PAIRS[:1])
    with pytest.raises(CrossrankError, match="backend='onnx'.*not supported by the gemma"):
        Reranker(gemma_dir, backend="onnx")


def test_prompt_override(gemma_dir):
    from crossrank import Reranker

    prompt = "Is B relevant to A? Yes or No."
    fixed = Reranker(gemma_dir, prompt=prompt).compute_score(PAIRS[:4])
    default = Reranker(gemma_dir)
    per_call = default.compute_score(PAIRS[:4], prompt=prompt)
    assert np.allclose(fixed, per_call, atol=1e-5)
    assert not np.allclose(fixed, default.compute_score(PAIRS[:4]), atol=1e-3)


def test_cli_score_and_rank_with_a_decoder(gemma_dir, tmp_path):
    from crossrank import Reranker

    inp = tmp_path / "pairs.jsonl"
    inp.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS[:4]))
    res = subprocess.run(
        [sys.executable, "-m", "crossrank", "score", "-m", str(gemma_dir), "-i", str(inp)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    scores = [json.loads(line)["score"] for line in res.stdout.splitlines()]
    expected = Reranker(gemma_dir).compute_score(PAIRS[:4])
    assert np.allclose(scores, expected, atol=1e-5)
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS[:4]) + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "crossrank", "rank", "-m", str(gemma_dir), "-q", QUERIES[0]]
        + ["-d", str(docs), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["index"] for r in rows] == list(np.argsort(-np.array(expected), kind="stable"))


def test_split_prefixes_only_when_it_pays():
    from crossrank.engine.batching import TokenBatch
    from crossrank.engine.llm_backend import split_prefixes

    ids = torch.arange(1, 101).repeat(3, 1)
    ids[:, 2:] += torch.arange(3)[:, None] * 1000  # rows share their first 2 tokens only
    mask = torch.ones_like(ids)
    batch = TokenBatch(ids, mask, None, torch.tensor([2, 2, 2]))
    assert split_prefixes(batch, 0.1) is None  # 4 of 300 tokens saved: not worth it
    prefixes, index, suffixes = split_prefixes(batch, 0.0)
    assert len(prefixes) == 1 and index.tolist() == [0, 0, 0]
    assert [len(x) for x in suffixes] == [98, 98, 98]
    assert split_prefixes(TokenBatch(ids, mask, None, torch.tensor([2, 3, 2])), 0.0) is not None
    assert split_prefixes(TokenBatch(ids[:1], mask[:1], None, torch.tensor([2])), 0.0) is None
