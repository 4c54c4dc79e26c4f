"""Our layerwise MiniCPM against an independent reference written here from the published math
(MiniCPM: scaled embeddings and residual branches; FlagEmbedding's layerwise heads)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from oracle import hf_llm_tokenizer, reference_llm_inputs

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

PAIRS = [
    ("what is panda?", "The giant panda is a bear species endemic to China."),
    ("what is panda?", "hi"),
    ("Debian", "Debian is a free operating system for your computer. " * 3),
]


def reference_scores(model_dir, ids: list[int], cutoffs: list[int]) -> dict[int, float]:
    """One unpadded sequence through a plain, unoptimised MiniCPM; score per cutoff layer."""
    cfg = json.loads((model_dir / "config.json").read_text())
    w = load_file(str(model_dir / "model.safetensors"))
    n_layers, hidden, heads = (
        cfg["num_hidden_layers"],
        cfg["hidden_size"],
        cfg["num_attention_heads"],
    )
    d = hidden // heads
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    branch = cfg["scale_depth"] / math.sqrt(n_layers)

    def norm(x, weight):
        return weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    t = len(ids)
    inv = [1.0 / theta ** (2 * i / d) for i in range(d // 2)]
    ang = torch.tensor([[p * f for f in inv] for p in range(t)], dtype=torch.float64).float()
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)

    def rope(x):  # x [heads, t, d]
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    h = w["model.embed_tokens.weight"][torch.tensor(ids)] * cfg["scale_emb"]
    collected = {}
    for layer in range(n_layers + 1):
        if layer in cutoffs:
            collected[layer] = norm(h, w["model.norm.weight"])[-1]
        if layer == max(cutoffs):
            break
        p = f"model.layers.{layer}."
        x = norm(h, w[p + "input_layernorm.weight"])
        q = (x @ w[p + "self_attn.q_proj.weight"].T).view(t, heads, d).transpose(0, 1)
        kv_heads = w[p + "self_attn.k_proj.weight"].shape[0] // d
        k = (x @ w[p + "self_attn.k_proj.weight"].T).view(t, kv_heads, d).transpose(0, 1)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).view(t, kv_heads, d).transpose(0, 1)
        k = k.repeat_interleave(heads // kv_heads, 0)
        v = v.repeat_interleave(heads // kv_heads, 0)
        att = rope(q) @ rope(k).transpose(1, 2) / math.sqrt(d)
        att = att.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf")).softmax(-1)
        o = (att @ v).transpose(0, 1).reshape(t, hidden) @ w[p + "self_attn.o_proj.weight"].T
        h = h + o * branch
        x = norm(h, w[p + "post_attention_layernorm.weight"])
        g = x @ w[p + "mlp.gate_proj.weight"].T
        u = x @ w[p + "mlp.up_proj.weight"].T
        h = h + ((g * torch.sigmoid(g)) * u) @ w[p + "mlp.down_proj.weight"].T * branch
    start = cfg["start_layer"]
    return {
        c: float(collected[c] @ w[f"lm_head.{c - start}.linear_head.weight"][0]) for c in cutoffs
    }


def batch(ids_list):
    seq = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(ids_list):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


def test_minicpm_every_cutoff_matches_reference(minicpm_dir):
    from crossrank.families import load_decoder

    tok = hf_llm_tokenizer(minicpm_dir)
    ids_list = reference_llm_inputs(tok, PAIRS, max_length=64, always_bos=True)
    assert all(x[0] == tok.bos_token_id for x in ids_list)
    model = load_decoder(minicpm_dir)
    cfg = model.config
    cutoffs = list(range(cfg.start_layer, cfg.num_hidden_layers + 1))
    with torch.no_grad():
        ours = model.score(*batch(ids_list), cutoff_layers=cutoffs)
    assert ours.shape == (len(PAIRS), len(cutoffs))
    worst = 0.0
    for i, ids in enumerate(ids_list):
        ref = reference_scores(minicpm_dir, ids, cutoffs)
        for j, c in enumerate(cutoffs):
            worst = max(worst, abs(ours[i, j].item() - ref[c]))
    print(f"minicpm parity max abs diff over cutoffs {cutoffs}: {worst:.2e}")
    assert ours.std().item() > 0.5, "scores must vary for the test to bite"
    assert worst < 1e-4


def test_minicpm_single_cutoff_stops_early_and_default_is_last(minicpm_dir):
    from crossrank.families import load_decoder

    tok = hf_llm_tokenizer(minicpm_dir)
    ids, mask = batch(reference_llm_inputs(tok, PAIRS, max_length=64, always_bos=True))
    model = load_decoder(minicpm_dir)
    n = model.config.num_hidden_layers
    calls = []
    hooks = [
        m.self_attn.k_proj.register_forward_hook(lambda *a: calls.append(1))
        for m in model.model.layers
    ]
    with torch.no_grad():
        two = model.score(ids, mask, cutoff_layers=[2])
        assert len(calls) == 2  # the forward pass stopped after layer 2
        full = model.score(ids, mask)
        both = model.score(ids, mask, cutoff_layers=[n, 2])
    for hk in hooks:
        hk.remove()
    assert torch.allclose(both[:, 0], full[:, 0], atol=1e-6)
    assert torch.allclose(both[:, 1], two[:, 0], atol=1e-6)


def test_minicpm_bad_cutoff(minicpm_dir):
    from crossrank.errors import InputError
    from crossrank.families import load_decoder

    model = load_decoder(minicpm_dir)
    ids, mask = batch([[1, 5, 6]])
    with pytest.raises(InputError, match="cutoff layers"):
        model.score(ids, mask, cutoff_layers=[0])
    with pytest.raises(InputError, match="cutoff layers"):
        model.score(ids, mask, cutoff_layers=[model.config.num_hidden_layers + 1])
