"""The reference, rebuilt from transformers: FlagEmbedding's FlagReranker input rules feeding
transformers' AutoModelForSequenceClassification. Used only as a test oracle."""

from __future__ import annotations

from pathlib import Path

import torch


def hf_tokenizer(model_dir: Path):
    import json

    from transformers import PreTrainedTokenizerFast

    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    if cfg.get("tokenizer_class", "").startswith("Bert"):
        special = dict(
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    else:
        special = dict(
            pad_token="<pad>",
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            cls_token="<s>",
            sep_token="</s>",
            model_input_names=["input_ids", "attention_mask"],
        )
    return PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), **special)


def reference_inputs(tokenizer, pairs, max_length=512, query_max_length=None):
    """FlagReranker's rules, written out by hand (transformers 5 dropped ``prepare_for_model``).

    Query and passage tokenized without special tokens; query cut to ``query_max_length``
    (default ``max_length * 3 // 4``); the passage then cut so the assembled pair, special
    tokens included, fits ``max_length``; templates spelled out per family.
    """
    qmax = query_max_length or max_length * 3 // 4
    q_ids = tokenizer([p[0] for p in pairs], add_special_tokens=False)["input_ids"]
    p_ids = tokenizer([p[1] for p in pairs], add_special_tokens=False)["input_ids"]
    bert = tokenizer.cls_token == "[CLS]"
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    n_special = 3 if bert else 4
    items = []
    for q, p in zip(q_ids, p_ids):
        q = q[:qmax]
        overflow = len(q) + len(p) + n_special - max_length
        if overflow > 0:
            p = p[: len(p) - overflow]
        if bert:
            ids = [cls, *q, sep, *p, sep]
            types = [0] * (len(q) + 2) + [1] * (len(p) + 1)
            items.append(
                {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids)}
            )
        else:
            ids = [cls, *q, sep, sep, *p, sep]
            items.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return items


def reference_scores(model_dir: Path, pairs, max_length=512, query_max_length=None, batch_size=4):
    """Reference logits, one pair at a time batches of ``batch_size`` padded to the longest."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = hf_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    items = reference_inputs(tokenizer, pairs, max_length, query_max_length)
    out = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            batch = tokenizer.pad(items[i : i + batch_size], padding=True, return_tensors="pt")
            out.extend(model(**batch).logits.view(-1).float().tolist())
    return out
