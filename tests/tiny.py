"""Tiny random checkpoints in Hugging Face layout, built with transformers (the test oracle).

Every builder writes config.json, model.safetensors and a tokenizer.json trained in-session on
a small multilingual corpus, so tests need no download.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

#: ten words the streaming-score tests build their pairs from
WORDS = ["panda", "bear", "bamboo", "china", "forest", "debian", "package", "kernel", "free",
         "software"]  # fmt: skip

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


def _word_counts(normalizer, pre_tokenizer) -> list[tuple[str, int]]:
    """Words of the corpus after normalization and pre-tokenization, most frequent first.

    The vocabularies below are built from these counts by hand rather than by tokenizers'
    trainers, whose tie-breaking differs from process to process: the same builder must give
    the same tokenizer in every test session.
    """
    counts: dict[str, int] = {}
    for text in train_corpus():
        normalized = normalizer.normalize_str(text)
        for word, _ in pre_tokenizer.pre_tokenize_str(normalized):
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def wordpiece_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A BERT-style tokenizer: lowercasing normalizer, WordPiece, ``[CLS] A [SEP] B [SEP]``.

    Vocabulary: special tokens, every character (word-initial and ``##`` continuation), then
    the most frequent words; other words split into characters.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = _word_counts(normalizer, pre_tokenizer)
    chars = sorted({c for w, _ in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    for word, _ in words:
        if len(vocab) >= vocab_size:
            break
        if word not in vocab:
            vocab.append(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return tok


def unigram_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """An XLM-R-style tokenizer: Metaspace + Unigram, ``<s> A </s></s> B </s>``, pad id 1.

    Vocabulary: special tokens, the most frequent words (scored by frequency), then every
    character with a low score, so rare words split into characters.
    """
    normalizer = normalizers.NFKC()
    pre_tokenizer = pre_tokenizers.Metaspace()
    words = _word_counts(normalizer, pre_tokenizer)
    total = sum(c for _, c in words)
    chars = sorted({c for w, _ in words for c in w})
    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    budget = vocab_size - len(pieces) - len(chars)
    pieces += [(w, math.log(c / total)) for w, c in words[:budget] if len(w) > 1]
    seen = {p for p, _ in pieces}
    pieces += [(c, -20.0) for c in chars if c not in seen]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Metaspace()
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
