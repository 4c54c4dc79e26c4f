"""Tiny random checkpoints in Hugging Face layout, built with transformers (the test oracle).

Every builder writes config.json, model.safetensors and a tokenizer.json trained in-session on
a small multilingual corpus, so tests need no download.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

CORPUS = [
    "The giant panda is a bear species endemic to China.",
    "what is panda? pandas eat bamboo and live in the mountains",
    "Debian is a free operating system for your computer.",
    "A reranker orders candidate passages by their relevance to a query.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Größe, Straße, Übung.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "日本語の文章をトークン化します。東京は日本の首都です。",
    "我喜欢吃熊猫形状的饼干。熊猫是中国的国宝。",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Москва — столица России.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024, punctuation: ; ! ? ( ) [ ] { } - _ / \\",
    "search engines rank documents; cross-encoders rescore the top hundred candidates",
]


def train_corpus() -> list[str]:
    return CORPUS * 3


def wordpiece_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A BERT-style tokenizer: lowercasing normalizer, WordPiece, ``[CLS] A [SEP] B [SEP]``."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        train_corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def unigram_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """An XLM-R-style tokenizer: Metaspace + Unigram, ``<s> A </s></s> B </s>``, pad id 1."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(
        train_corpus(),
        trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>"),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def _write(path: Path, model, tok: Tokenizer, tokenizer_config: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def bert_checkpoint(path: Path, *, seed: int = 0, bare: bool = False, **overrides) -> Path:
    """BertForSequenceClassification (or a bare BertModel), type vocab 2, LN eps 1e-12."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    tok = wordpiece_tokenizer()
    cfg = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=0,
        num_labels=1,
        initializer_range=0.3,  # large weights: scores spread out, so parity tests bite
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    config = BertConfig(**cfg)
    model = (BertModel if bare else BertForSequenceClassification)(config).eval()
    _write(
        path,
        model,
        tok,
        {"tokenizer_class": "BertTokenizer", "model_max_length": cfg["max_position_embeddings"]},
    )
    return path


def roberta_checkpoint(
    path: Path, *, seed: int = 0, xlm: bool = True, bare: bool = False, **overrides
) -> Path:
    """XLMRobertaForSequenceClassification (or RoBERTa, or a bare encoder): type vocab 1, pad 1."""
    import torch
    from transformers import (
        RobertaConfig,
        RobertaForSequenceClassification,
        RobertaModel,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    tok = unigram_tokenizer()
    cfg = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        num_labels=1,
        initializer_range=0.3,  # large weights: scores spread out, so parity tests bite
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    if xlm:
        config = XLMRobertaConfig(**cfg)
        cls = XLMRobertaModel if bare else XLMRobertaForSequenceClassification
    else:
        config = RobertaConfig(**cfg)
        cls = RobertaModel if bare else RobertaForSequenceClassification
    model = cls(config).eval()
    _write(
        path,
        model,
        tok,
        {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": cfg["max_position_embeddings"] - 2,
        },
    )
    return path
