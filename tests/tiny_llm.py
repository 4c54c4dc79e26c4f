"""Tiny decoder-reranker checkpoints (Gemma, layerwise MiniCPM) in Hugging Face layout, and
the reference input rules of FlagEmbedding's LLM rerankers written out by hand (test oracle).

Gemma weights come from transformers' GemmaForCausalLM; MiniCPM has no transformers class, so
its weights are random tensors saved under the checkpoint's tensor names.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tiny import train_corpus

PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)
LLM_CORPUS = [PROMPT, "A: what is panda?\nB: Yes No Yes No", "Yes\nNo\n"]


def llm_tokenizer(specials: list[str], vocab_size: int = 500) -> Tokenizer:
    """A byte-level BPE tokenizer whose first tokens are ``specials`` (ids 0, 1, ...)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        train_corpus() + LLM_CORPUS * 5,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return tok


def _write_tokenizer(path: Path, tok: Tokenizer, bos: str, pad: str | None, eos: str) -> None:
    tok.save(str(path / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos}
    if pad is not None:
        cfg["pad_token"] = pad
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))


def gemma_checkpoint(path: Path, *, seed: int = 0, std: float = 0.2, **overrides) -> Path:
    """GemmaForCausalLM: hidden 64, 2 layers, 4 heads, 1 KV head, head_dim 32 (tied output)."""
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    tok = llm_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"])
    cfg = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        hidden_act="gelu",
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        initializer_range=std,
        rope_theta=1000.0,  # not the default, so a test catches a theta ignored
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = GemmaForCausalLM(GemmaConfig(**cfg)).eval()
    with torch.no_grad():  # RMSNorm weights start at 0 (i.e. 1 + 0): make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    _write_tokenizer(path, tok, "<bos>", "<pad>", "<eos>")
    return path


def minicpm_config(vocab_size: int, **overrides) -> dict:
    cfg = dict(
        architectures=["LayerWiseMiniCPMForCausalLM"],
        model_type="minicpm",
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        hidden_act="silu",
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        scale_emb=12,
        scale_depth=1.4,
        dim_model_base=256,
        start_layer=1,
        head_type="simple",
        head_multi=True,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return cfg


def minicpm_checkpoint(path: Path, *, seed: int = 0, std: float = 0.1, **overrides) -> Path:
    """LayerWiseMiniCPMForCausalLM weights: 4 layers, heads from layer 1 (lm_head.0 .. 3)."""
    import torch
    from safetensors.torch import save_file

    tok = llm_tokenizer(["<unk>", "<s>", "</s>"])
    cfg = minicpm_config(tok.get_vocab_size(), **overrides)
    g = torch.Generator().manual_seed(seed)
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    d = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * d

    def rnd(*shape, mean=0.0):
        return (torch.randn(*shape, generator=g) * std + mean).contiguous()

    state = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state[p + "self_attn.q_proj.weight"] = rnd(h, h)
        state[p + "self_attn.k_proj.weight"] = rnd(kv, h)
        state[p + "self_attn.v_proj.weight"] = rnd(kv, h)
        state[p + "self_attn.o_proj.weight"] = rnd(h, h)
        state[p + "mlp.gate_proj.weight"] = rnd(f, h)
        state[p + "mlp.up_proj.weight"] = rnd(f, h)
        state[p + "mlp.down_proj.weight"] = rnd(h, f)
        state[p + "input_layernorm.weight"] = rnd(h, mean=1.0)
        state[p + "post_attention_layernorm.weight"] = rnd(h, mean=1.0)
    state["model.norm.weight"] = rnd(h, mean=1.0)
    for j in range(cfg["num_hidden_layers"] + 1 - cfg["start_layer"]):
        state[f"lm_head.{j}.linear_head.weight"] = rnd(1, h) * 5
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg))
    _write_tokenizer(path, tok, "<s>", None, "</s>")
    return path


def hf_tokenizer(model_dir: Path):
    """transformers' fast tokenizer over the checkpoint's tokenizer.json (test oracle)."""
    from transformers import PreTrainedTokenizerFast

    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token") if k in cfg}
    return PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), **special)


def reference_llm_inputs(
    tokenizer, pairs, *, max_length=512, query_max_length=None, prompt=None, always_bos=False
) -> list[list[int]]:
    """FlagLLMReranker's (and, with ``always_bos``, LayerWiseFlagLLMReranker's) input ids,
    rebuilt by hand with transformers' tokenizer (transformers 5 has no ``prepare_for_model``)."""
    prompt = PROMPT if prompt is None else prompt
    qmax = query_max_length or max_length * 3 // 4
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    sep_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    limit = max_length + len(sep_ids) + len(prompt_ids)
    q_batch = tokenizer(
        ["A: " + q for q, _ in pairs], add_special_tokens=False, max_length=qmax, truncation=True
    )["input_ids"]
    p_batch = tokenizer(
        ["B: " + p for _, p in pairs],
        add_special_tokens=False,
        max_length=max_length,
        truncation=True,
    )["input_ids"]
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    out = []
    for q, p in zip(q_batch, p_batch):
        first = list(q)
        if always_bos or (bos is not None and bos != pad):
            first = [bos] + first
        second = sep_ids + list(p)
        excess = len(first) + len(second) - limit
        if excess > 0 and len(second) > excess:  # only_second; too short: left as is
            second = second[: len(second) - excess]
        out.append(first + second + sep_ids + prompt_ids)
    return out


def yes_id(tokenizer) -> int:
    return tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
