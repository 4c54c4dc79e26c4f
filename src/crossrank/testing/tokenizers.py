"""Tiny tokenizers of the three kinds the model families use, and their files.

* :func:`wordpiece_tokenizer`: BERT's (lowercasing, WordPiece, ``[CLS] A [SEP] B [SEP]``);
* :func:`unigram_tokenizer`: XLM-R's (NFKC, Metaspace, Unigram, ``<s> A </s></s> B </s>``);
* :func:`bpe_tokenizer`: byte-level BPE with a family's special tokens (Gemma, MiniCPM,
  Qwen3; ``qwen_split`` gives Qwen's normalizer and pre-tokenizer regex).

Without ``texts``, WordPiece and Unigram vocabularies are built by hand from the built-in
corpus rather than by tokenizers' trainers, whose tie-breaking differs from process to process:
the same call gives the same tokenizer in every test session. With ``texts`` (a benchmark's
corpus) they are trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from crossrank.testing.corpus import train_corpus

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
UNIGRAM_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]

#: Qwen2 / Qwen3's pre-tokenizer split (from their tokenizer.json): punctuation keeps the
#: newlines that follow it ("?\n" is one piece), digits stand alone
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _word_counts(normalizer, pre_tokenizer) -> list[tuple[str, int]]:
    """Words of the built-in corpus after normalization and pre-tokenization, most frequent
    first (ties by the word)."""
    counts: dict[str, int] = {}
    for text in train_corpus():
        normalized = normalizer.normalize_str(text)
        for word, _ in pre_tokenizer.pre_tokenize_str(normalized):
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _finish(tok, normalizer, pre_tokenizer, decoder, texts, trainer, template) -> Tokenizer:
    """``tok`` with its pipeline set, trained by ``trainer`` on ``texts`` when given (else its
    vocabulary is already built), and the ``(single, pair, special_tokens)`` template."""
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    if texts is not None:
        tok.train_from_iterator(texts, trainer)
    single, pair, special_tokens = template
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=special_tokens
    )
    return tok


def wordpiece_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 400) -> Tokenizer:
    """A BERT-style tokenizer: lowercasing normalizer, WordPiece, ``[CLS] A [SEP] B [SEP]``.

    Without ``texts`` the vocabulary is the special tokens, every character of the built-in
    corpus (word-initial and ``##`` continuation), then its most frequent words; other words
    split into characters. With ``texts``, tokenizers' WordPieceTrainer learns it from them.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if texts is None:
        words = _word_counts(normalizer, pre_tokenizer)
        chars = sorted({c for w, _ in words for c in w})
        vocab = [*WORDPIECE_SPECIALS, *chars, *("##" + c for c in chars)]
        for word, _ in words:
            if len(vocab) >= vocab_size:
                break
            if word not in vocab:
                vocab.append(word)
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=WORDPIECE_SPECIALS, show_progress=False
    )
    template = ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", [("[CLS]", 2), ("[SEP]", 3)])
    return _finish(tok, normalizer, pre_tokenizer, decoders.WordPiece(), texts, trainer, template)


def unigram_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 400) -> Tokenizer:
    """An XLM-R-style tokenizer: NFKC, Metaspace + Unigram, ``<s> A </s></s> B </s>``, pad id 1.

    Without ``texts`` the vocabulary is the special tokens, the built-in corpus's most frequent
    words (scored by frequency), then every character with a low score, so rare words split
    into characters. With ``texts``, tokenizers' UnigramTrainer learns it from them (pieces of
    up to 16 characters, ``<mask>`` added).
    """
    normalizer = normalizers.NFKC()
    pre_tokenizer = pre_tokenizers.Metaspace()
    if texts is None:
        words = _word_counts(normalizer, pre_tokenizer)
        total = sum(c for _, c in words)
        chars = sorted({c for w, _ in words for c in w})
        pieces: list[tuple[str, float]] = [(s, 0.0) for s in UNIGRAM_SPECIALS]
        budget = vocab_size - len(pieces) - len(chars)
        pieces += [(w, math.log(c / total)) for w, c in words[:budget] if len(w) > 1]
        seen = {p for p, _ in pieces}
        pieces += [(c, -20.0) for c in chars if c not in seen]
        tok = Tokenizer(models.Unigram(pieces, unk_id=3))
    else:
        tok = Tokenizer(models.Unigram())
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=[*UNIGRAM_SPECIALS, "<mask>"],
        unk_token="<unk>",
        max_piece_length=16,
        show_progress=False,
    )
    template = ("<s> $A </s>", "<s> $A </s> </s> $B </s>", [("<s>", 0), ("</s>", 2)])
    return _finish(tok, normalizer, pre_tokenizer, decoders.Metaspace(), texts, trainer, template)


def bpe_tokenizer(
    texts: Sequence[str],
    specials: Sequence[str],
    vocab_size: int = 500,
    *,
    qwen_split: bool = False,
    must_have: Sequence[str] = (),
) -> Tokenizer:
    """A byte-level BPE tokenizer trained on ``texts`` whose first tokens are ``specials``
    (ids 0, 1, ...).

    Args:
        texts: the training texts (a family's template words among them).
        specials: the special tokens, in id order.
        vocab_size: the vocabulary size the trainer aims at.
        qwen_split: Qwen2 / Qwen3's NFC normalizer and regex split (:data:`QWEN_SPLIT`) before
            the byte-level step; otherwise GPT-2's byte-level pre-tokenizer.
        must_have: tokens that must be whole vocabulary entries (``"yes"``, ``"no"``);
            ``ValueError`` when the trainer did not make one of them.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    if qwen_split:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    missing = [t for t in must_have if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"the trained BPE vocabulary has no token {missing}: add them to texts")
    return tok


def write_tokenizer(path: Path, tok: Tokenizer, tokenizer_config: dict[str, Any]) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` (``tokenizer_config``) into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
