"""Tiny Qwen3-Reranker and ModernBERT cross-encoder checkpoints in Hugging Face layout, built
with transformers (the test oracle), plus Qwen3-Reranker's published input rules written out
by hand (the authors' ``format_instruction`` / ``process_inputs`` / ``compute_logits``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tiny import train_corpus, wordpiece_tokenizer

QWEN3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
#: the authors' strings, copied from the model card (independent of crossrank's constants)
AUTHORS_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
AUTHORS_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
AUTHORS_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_CORPUS = [
    AUTHORS_PREFIX,
    "<Instruct>: Given a web search query\n<Query>: what is panda?\n<Document>: yes no",
    "yes\nno\nyes no yes no",
]


#: Qwen2 / Qwen3's pre-tokenizer split (from their tokenizer.json): punctuation keeps the
#: newlines that follow it ("?\n" is one piece), digits stand alone
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen3_tokenizer(vocab_size: int = 600) -> Tokenizer:
    """A byte-level BPE tokenizer built like Qwen3's (NFC, its regex split, byte-level) with
    its chat special tokens and ``yes`` / ``no`` tokens."""
    from tokenizers import Regex, normalizers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        train_corpus() + QWEN3_CORPUS * 5,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=QWEN3_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    assert tok.token_to_id("yes") is not None and tok.token_to_id("no") is not None
    return tok


def _qwen3_config(vocab_size: int, **overrides) -> dict:
    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # not hidden / heads (16), as in Qwen3-0.6B (1024 / 16 = 64, head_dim 128)
        hidden_act="silu",
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},  # not the default
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
        initializer_range=0.2,
    )
    cfg.update(overrides)
    return cfg


def qwen3_checkpoint(path: Path, *, seed: int = 0, **overrides) -> Path:
    """Qwen3ForCausalLM: hidden 64, 2 layers, 4 heads / 2 KV heads, head_dim 32."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen3_tokenizer()
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**_qwen3_config(tok.get_vocab_size(), **overrides)))
    with torch.no_grad():  # RMSNorm weights start at 1: make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(path), safe_serialization=True)
    _write_qwen3_tokenizer(path, tok)
    return path


def qwen3_seqcls_checkpoint(causal_dir: Path, path: Path) -> Path:
    """The converted form of a Qwen3-Reranker: Qwen3ForSequenceClassification whose one head
    row is ``lm_head["yes"] - lm_head["no"]`` (as vLLM / sentence-transformers convert it)."""
    import torch
    from transformers import Qwen3ForCausalLM, Qwen3ForSequenceClassification

    causal = Qwen3ForCausalLM.from_pretrained(str(causal_dir), dtype=torch.float32)
    tok = Tokenizer.from_file(str(causal_dir / "tokenizer.json"))
    config = causal.config
    config.architectures = ["Qwen3ForSequenceClassification"]
    config.num_labels = 1
    model = Qwen3ForSequenceClassification(config)
    model.model.load_state_dict(causal.model.state_dict())
    rows = causal.get_output_embeddings().weight
    with torch.no_grad():
        model.score.weight.copy_((rows[tok.token_to_id("yes")] - rows[tok.token_to_id("no")])[None])
    path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(path), safe_serialization=True)
    _write_qwen3_tokenizer(path, tok)
    return path


def _write_qwen3_tokenizer(path: Path, tok: Tokenizer) -> None:
    tok.save(str(path / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))


def hf_qwen3_tokenizer(model_dir: Path):
    """transformers' fast tokenizer over the checkpoint's tokenizer.json, left padding (the
    authors' setting)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )


def authors_inputs(tokenizer, pairs, *, instruction=None, max_length=8192):
    """The model card's ``process_inputs(format_instruction(...))``: left-padded tensors."""
    instruction = AUTHORS_INSTRUCTION if instruction is None else instruction
    texts = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    prefix_tokens = tokenizer.encode(AUTHORS_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(AUTHORS_SUFFIX, add_special_tokens=False)
    inputs = tokenizer(
        texts,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
    )
    for i, ele in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    return tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)


def authors_scores(model_dir: Path, pairs, *, instruction=None, max_length=8192):
    """``(P(yes), logit(yes) - logit(no), input ids)`` by the model card's ``compute_logits``
    on transformers' Qwen3ForCausalLM."""
    import torch
    from transformers import Qwen3ForCausalLM

    tokenizer = hf_qwen3_tokenizer(model_dir)
    model = Qwen3ForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    inputs = authors_inputs(tokenizer, pairs, instruction=instruction, max_length=max_length)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    with torch.no_grad():
        batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, yes]
        false_vector = batch_scores[:, no]
        stacked = torch.stack([false_vector, true_vector], dim=1)
        probs = torch.nn.functional.log_softmax(stacked, dim=1)[:, 1].exp()
    ids = [
        row[mask.bool()].tolist()
        for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])
    ]
    return probs, true_vector - false_vector, ids


def modernbert_checkpoint(path: Path, *, seed: int = 0, **overrides) -> Path:
    """ModernBertForSequenceClassification: hidden 64, 4 layers (global every 3rd), a sliding
    window of 16 (8 each side) so that short test inputs already exceed it."""
    import torch
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    tok = wordpiece_tokenizer()
    cfg = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        global_attn_every_n_layers=3,
        local_attention=16,
        global_rope_theta=2000.0,  # not the defaults, so a test catches a theta ignored
        local_rope_theta=500.0,
        max_position_embeddings=1024,
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
        num_labels=1,
        classifier_pooling="cls",
        initializer_range=0.3,
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = ModernBertForSequenceClassification(ModernBertConfig(**cfg))
    with torch.no_grad():  # LayerNorm weights start at 1: make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(path), safe_serialization=True)
    tok.save(str(path / "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "model_max_length": cfg["max_position_embeddings"],
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return path


def short_max_length(model_dir: Path, base: int = 48) -> int:
    """A max_length that leaves a tiny checkpoint of any family room for a short passage:
    ``base``, plus, for Qwen3-Reranker, the ~95 tokens its template and default instruction
    take with the tiny tokenizer (other families' templates are short)."""
    archs = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures", [])
    return base + 95 if any(a.startswith("Qwen3") for a in archs) else base
