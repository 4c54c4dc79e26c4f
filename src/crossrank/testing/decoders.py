"""Tiny decoder-reranker checkpoints (Gemma, layerwise MiniCPM, Qwen3-Reranker) in Hugging
Face layout, and random decoders of any size built by crossrank's own model classes.

Gemma and Qwen3 weights come from transformers' classes (the parity tests' oracle loads the
same files); MiniCPM has no transformers class, so its weights are random tensors saved under
the checkpoint's tensor names. :func:`random_decoder` needs no transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from crossrank.families import family_for
from crossrank.models.weights import write_checkpoint
from crossrank.testing.corpus import LLM_CORPUS, QWEN3_CORPUS, train_corpus
from crossrank.testing.hf import perturb_norms, transformers, write_hf
from crossrank.testing.tokenizers import bpe_tokenizer, write_tokenizer


@dataclass(frozen=True)
class DecoderSpec:
    """What a decoder family's tiny checkpoint is made of (sizes and values of the tests)."""

    architecture: str
    model_type: str
    specials: tuple[str, ...]  # the tokenizer's special tokens, in id order
    tokens: dict[str, str]  # tokenizer_config.json's bos / eos / pad tokens
    texts: tuple[str, ...]  # the family's template words, added to the tokenizer's corpus
    config: dict[str, Any] = field(default_factory=dict)
    qwen_split: bool = False
    must_have: tuple[str, ...] = ()


#: the config fields of each family's tiny checkpoint (a table: several fields a line)
# fmt: off
SPECS: dict[str, DecoderSpec] = {
    "gemma": DecoderSpec(
        "GemmaForCausalLM", "gemma", ("<pad>", "<eos>", "<bos>", "<unk>"),
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}, tuple(LLM_CORPUS),
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=1, head_dim=32, hidden_act="gelu", rms_norm_eps=1e-6,
             max_position_embeddings=1024, pad_token_id=0, eos_token_id=1, bos_token_id=2,
             rope_theta=1000.0,  # not the default, so a test catches a theta ignored
             tie_word_embeddings=True),
    ),
    "minicpm-layerwise": DecoderSpec(
        "LayerWiseMiniCPMForCausalLM", "minicpm", ("<unk>", "<s>", "</s>"),
        {"bos_token": "<s>", "eos_token": "</s>"}, tuple(LLM_CORPUS),
        dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, hidden_act="silu", rms_norm_eps=1e-5,
             max_position_embeddings=1024, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
             scale_emb=12, scale_depth=1.4, dim_model_base=256,
             start_layer=1, head_type="simple", head_multi=True, tie_word_embeddings=False),
    ),
    "qwen3": DecoderSpec(
        "Qwen3ForCausalLM", "qwen3",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, tuple(QWEN3_CORPUS),
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2,
             head_dim=32,  # not hidden / heads (16), as in Qwen3-0.6B (1024 / 16, head_dim 128)
             hidden_act="silu", rms_norm_eps=1e-6, max_position_embeddings=2048,
             rope_parameters={"rope_type": "default", "rope_theta": 1000.0},  # not the default
             tie_word_embeddings=True, pad_token_id=0, eos_token_id=2, bos_token_id=None),
        qwen_split=True, must_have=("yes", "no"),
    ),
}
# fmt: on
VOCAB_SIZES = {"gemma": 500, "minicpm-layerwise": 500, "qwen3": 600}


def decoder_tokenizer(
    family: str,
    texts: Sequence[str] | None = None,
    vocab_size: int | None = None,
    *,
    repeat: int = 5,
) -> Tokenizer:
    """The byte-level BPE tokenizer of decoder ``family`` (a key of :data:`SPECS`), trained on
    ``texts`` (default: the built-in corpus) plus the family's template words ``repeat``
    times; ``vocab_size`` defaults to the tiny checkpoint's."""
    spec = SPECS[family]
    corpus = (train_corpus() if texts is None else list(texts)) + list(spec.texts) * repeat
    return bpe_tokenizer(
        corpus,
        spec.specials,
        vocab_size or VOCAB_SIZES[family],
        qwen_split=spec.qwen_split,
        must_have=spec.must_have,
    )


def _tokenizer_config(family: str) -> dict[str, str]:
    return {"tokenizer_class": "PreTrainedTokenizerFast", **SPECS[family].tokens}


def hf_decoder(
    family: str,
    path: Path,
    *,
    seed: int = 0,
    std: float = 0.2,
    norm_std: float | None = 0.3,
    tokenizer: Tokenizer | None = None,
    **overrides: Any,
) -> Path:
    """transformers' model of decoder ``family`` (``gemma``, ``qwen3``): its tiny config
    (:data:`SPECS`) changed by ``overrides``, weights N(0, ``std``) with seed ``seed``, norm
    weights drawn around their neutral value (1; 0 for Gemma's ``1 + w``) with ``norm_std``
    (None: left neutral), ``tokenizer`` by default :func:`decoder_tokenizer`'s."""
    hf = transformers()
    spec = SPECS[family]
    tok = tokenizer or decoder_tokenizer(family)
    cfg = dict(spec.config, vocab_size=tok.get_vocab_size(), initializer_range=std)
    cfg.update(overrides)
    torch.manual_seed(seed)
    config_class = getattr(hf, spec.architecture.removesuffix("ForCausalLM") + "Config")
    model = getattr(hf, spec.architecture)(config_class(**cfg))
    if norm_std is not None:
        perturb_norms(model, 0.0 if family == "gemma" else 1.0, norm_std)
    return write_hf(path, model, tok, _tokenizer_config(family))


def gemma_checkpoint(path: Path, **options: Any) -> Path:
    """GemmaForCausalLM (transformers): hidden 64, 2 layers, 4 heads, 1 KV head, head_dim 32,
    tied output; ``options`` as :func:`hf_decoder`'s."""
    return hf_decoder("gemma", path, **options)


def qwen3_checkpoint(path: Path, **options: Any) -> Path:
    """Qwen3ForCausalLM (transformers): hidden 64, 2 layers, 4 heads / 2 KV heads, head_dim 32;
    ``options`` as :func:`hf_decoder`'s."""
    return hf_decoder("qwen3", path, **options)


def qwen3_seqcls_checkpoint(causal_dir: Path, path: Path) -> Path:
    """The converted form of a Qwen3-Reranker: Qwen3ForSequenceClassification whose one head
    row is ``lm_head["yes"] - lm_head["no"]`` (as vLLM / sentence-transformers convert it)."""
    hf = transformers()
    causal = hf.Qwen3ForCausalLM.from_pretrained(str(causal_dir), dtype=torch.float32)
    tok = Tokenizer.from_file(str(causal_dir / "tokenizer.json"))
    config = causal.config
    config.architectures = ["Qwen3ForSequenceClassification"]
    config.num_labels = 1
    model = hf.Qwen3ForSequenceClassification(config)
    model.model.load_state_dict(causal.model.state_dict())
    rows = causal.get_output_embeddings().weight
    with torch.no_grad():
        model.score.weight.copy_((rows[tok.token_to_id("yes")] - rows[tok.token_to_id("no")])[None])
    return write_hf(path, model, tok, _tokenizer_config("qwen3"))


def _raw_config(family: str, vocab_size: int, overrides: dict[str, Any]) -> dict[str, Any]:
    spec = SPECS[family]
    raw = dict(architectures=[spec.architecture], model_type=spec.model_type, **spec.config)
    raw.update(vocab_size=vocab_size, **overrides)
    return raw


def minicpm_checkpoint(path: Path, *, seed: int = 0, std: float = 0.1, **overrides: Any) -> Path:
    """LayerWiseMiniCPMForCausalLM weights: 4 layers, heads from layer 1 (lm_head.0 .. 3);
    matrices N(0, ``std``), norms N(1, ``std``), heads N(0, 5 ``std``)."""
    tok = decoder_tokenizer("minicpm-layerwise")
    cfg = _raw_config("minicpm-layerwise", tok.get_vocab_size(), overrides)
    g = torch.Generator().manual_seed(seed)
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])

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
    return _write_decoder(path, state, cfg, tok, "minicpm-layerwise")


def random_decoder(
    family: str,
    path: Path,
    tokenizer: Tokenizer,
    *,
    seed: int = 0,
    std: float = 0.02,
    **overrides: Any,
) -> Path:
    """A decoder of ``family`` built by crossrank's own model class (no transformers): the
    tiny test shape changed by ``overrides`` (config.json fields), matrices N(0, ``std``) with
    seed ``seed``, norms at their neutral start, saved under the Hugging Face tensor names."""
    raw = _raw_config(family, tokenizer.get_vocab_size(), dict(overrides, torch_dtype="float32"))
    fam = family_for(raw)
    torch.manual_seed(seed)
    model = fam.model_class()(fam.parse_config(raw))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    return _write_decoder(path, model.checkpoint_state(), raw, tokenizer, family)


def _write_decoder(
    path: Path, state: dict[str, torch.Tensor], raw: dict[str, Any], tok: Tokenizer, family: str
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_checkpoint(path, state, raw)
    write_tokenizer(path, tok, _tokenizer_config(family))
    return path
