"""The references, rebuilt from transformers and written out by hand (test oracles only):
FlagEmbedding's FlagReranker input rules feeding transformers'
AutoModelForSequenceClassification; FlagLLMReranker's input rules (Gemma, layerwise MiniCPM);
Qwen3-Reranker's published ``format_instruction`` / ``process_inputs`` / ``compute_logits``.
The strings are the authors', copied from their code and model cards (independent of
crossrank's constants)."""

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


# -- FlagLLMReranker (bge-reranker-v2-gemma, bge-reranker-v2-minicpm-layerwise) -------------

PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)


def hf_llm_tokenizer(model_dir: Path):
    """transformers' fast tokenizer over an LLM checkpoint's tokenizer.json, with the special
    tokens of its tokenizer_config.json."""
    import json

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


# -- Qwen3-Reranker (the model card's code) -------------------------------------------------

AUTHORS_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
AUTHORS_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
AUTHORS_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


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
