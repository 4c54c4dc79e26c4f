"""Our Gemma decoder against transformers' GemmaForCausalLM (the oracle) on a tiny checkpoint."""

from __future__ import annotations

import pytest
import torch

from oracle import PROMPT, hf_llm_tokenizer, reference_llm_inputs, yes_id

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

PAIRS = [
    ("what is panda?", "The giant panda is a bear species endemic to China."),
    ("what is panda?", "hi"),
    ("Debian", "Debian is a free operating system for your computer. " * 3),
    ("A reranker orders candidate passages", "search engines rank documents"),
]


def hf_scores(model_dir, ids_list, padding_side="right"):
    from transformers import GemmaForCausalLM

    model = GemmaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tok = hf_llm_tokenizer(model_dir)
    seq = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(ids_list):
        if padding_side == "right":
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        else:
            ids[i, seq - len(x) :] = torch.tensor(x)
            mask[i, seq - len(x) :] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    last = mask.sum(1) - 1 if padding_side == "right" else torch.full((len(ids_list),), seq - 1)
    return logits[torch.arange(len(ids_list)), last, yes_id(tok)]


def padded(ids_list):
    seq = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(ids_list):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


def test_gemma_matches_transformers(gemma_dir):
    from crossrank.families import load_decoder

    tok = hf_llm_tokenizer(gemma_dir)
    ids_list = reference_llm_inputs(tok, PAIRS, max_length=64)
    ref = hf_scores(gemma_dir, ids_list)
    model = load_decoder(gemma_dir)
    ids, mask = padded(ids_list)
    with torch.no_grad():
        ours = model.score(ids, mask, token_ids=[yes_id(tok)])[:, 0]
    assert ref.std() > 0.5, "scores must vary for the test to bite"
    diff = (ours - ref).abs().max().item()
    print(f"gemma parity max abs diff {diff:.2e}")
    assert diff < 1e-4
    # left padding in the reference gives the same scores (rotary positions are relative)
    left = hf_scores(gemma_dir, ids_list, padding_side="left")
    assert (left - ref).abs().max().item() < 1e-4


def test_gemma_single_rows_match_batch(gemma_dir):
    from crossrank.families import load_decoder

    tok = hf_llm_tokenizer(gemma_dir)
    ids_list = reference_llm_inputs(tok, PAIRS, max_length=64, prompt=PROMPT)
    model = load_decoder(gemma_dir)
    ids, mask = padded(ids_list)
    with torch.no_grad():
        batch = model.score(ids, mask, token_ids=[yes_id(tok), 5])
        for i, x in enumerate(ids_list):
            one = model.score(*padded([x]), token_ids=[yes_id(tok), 5])
            assert torch.allclose(one[0], batch[i], atol=1e-5)


def test_gemma_bf16_loads_without_fp32_copy(gemma_dir):
    from crossrank.families import load_decoder

    model = load_decoder(gemma_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tok = hf_llm_tokenizer(gemma_dir)
    ids, mask = padded(reference_llm_inputs(tok, PAIRS[:2], max_length=64))
    ref = load_decoder(gemma_dir).score(ids, mask, token_ids=[yes_id(tok)])
    with torch.no_grad():
        got = model.score(ids, mask, token_ids=[yes_id(tok)])
    assert got.dtype == torch.float32
    assert (got - ref).abs().max().item() < 0.25 * max(1.0, ref.abs().max().item())


def test_gemma_missing_weights_is_a_load_error(gemma_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from crossrank.errors import ModelLoadError
    from crossrank.families import load_decoder

    bad = tmp_path / "bad"
    shutil.copytree(gemma_dir, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop("model.norm.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="model.norm.weight"):
        load_decoder(bad)
