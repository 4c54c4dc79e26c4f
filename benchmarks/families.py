"""The newer families against their peers, on the CPU, in one process, same checkpoint and pairs.

* ``modernbert``: a random ModernBERT-base-shaped ``ModernBertForSequenceClassification``
  (22 layers, hidden 768, 12 heads, GeGLU 1152, window 128, global every 3rd layer, vocabulary
  50368) scored by crossrank and by sentence-transformers' ``CrossEncoder`` (transformers'
  forward, SDPA attention), on dev queries of debian-ir with their BM25 candidates.
* ``qwen3``: a random Qwen3-Reranker-0.6B-shaped ``Qwen3ForCausalLM`` (28 layers, hidden 1024,
  16 / 8 heads, head_dim 128, FFN 3072, vocabulary 151669, tied output) scored by crossrank and
  by the model card's code (its template, left padding, transformers' forward, the yes / no
  softmax at the last position), on a small workload.
* ``prefix``: crossrank on Qwen3-Reranker with and without query-prefix sharing, one query and
  100 documents of 100-300 tokens; the 0.6B layer shape with ``--prefix-layers`` layers (the
  speed-up is per layer: every layer has the same shape).

Tokenizers are trained here on the debian-ir corpus (the real ones cannot be downloaded):
ModernBERT gets a WordPiece with ``[CLS] A [SEP] B [SEP]``, Qwen3 a byte-level BPE with the
chat special tokens; both libraries use the same tokenizer file. Timings are process CPU
seconds with ``--threads`` (default 1) torch threads, so they measure compute even on a busy
machine; wall seconds are printed too. One run each (after a short warm-up).

    PYTHONPATH=src nice -n 10 /work/main/.venv/bin/python benchmarks/families.py --json fam.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path("/work/shared/data/debian-ir")
CACHE = Path(__file__).parent / ".cache" / "families"


def read_jsonl(path: Path):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def corpus_texts(limit: int) -> list[str]:
    out = []
    for doc in read_jsonl(DATA / "corpus.jsonl"):
        out.append(f"{doc.get('title', '')} {doc['text']}".strip())
        if len(out) >= limit:
            break
    return out


def bm25_pairs(n_queries: int, per_query: int) -> list[tuple[str, str]]:
    """The first dev queries of the BM25 run with their top candidates."""
    queries = {q["_id"]: q["text"] for q in read_jsonl(DATA / "queries.jsonl")}
    wanted: dict[str, list[str]] = {}
    with open(DATA / "dev.bm25.top100.run", encoding="utf-8") as fh:
        for line in fh:
            qid, _, did, *_ = line.split()
            if qid not in wanted and len(wanted) == n_queries:
                break
            if len(wanted.setdefault(qid, [])) < per_query:
                wanted[qid].append(did)
    ids = {d for ds in wanted.values() for d in ds}
    docs = {}
    for doc in read_jsonl(DATA / "corpus.jsonl"):
        if doc["_id"] in ids:
            docs[doc["_id"]] = f"{doc.get('title', '')} {doc['text']}".strip()
    return [(queries[q], docs[d]) for q, ds in wanted.items() for d in ds]


# fmt: off
#: ModernBERT-base's shape (random weights N(0, 0.02), norms at 1, the default rope thetas)
MODERNBERT_BASE = dict(
    vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22,
    num_attention_heads=12, local_attention=128, max_position_embeddings=8192,
    classifier_pooling="mean", initializer_range=0.02,
    global_rope_theta=160000.0, local_rope_theta=10000.0,
)
#: Qwen3-Reranker-0.6B's shape (random weights N(0, 0.02), norms at 1)
QWEN3_06B = dict(
    vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
)
# fmt: on


def modernbert_checkpoint(path: Path, texts: list[str]) -> Path:
    if (path / "config.json").is_file():
        return path
    from crossrank import testing

    tok = testing.wordpiece_tokenizer(texts, vocab_size=8000)
    return testing.modernbert_checkpoint(path, tokenizer=tok, norm_std=None, **MODERNBERT_BASE)


def qwen3_checkpoint(path: Path, texts: list[str], layers: int) -> Path:
    if (path / "config.json").is_file():
        return path
    from crossrank import testing
    from crossrank.testing.decoders import SPECS

    # the answer tokens "yes" and "no" (no leading space) must be whole vocabulary entries
    tok = testing.bpe_tokenizer(
        [*texts, *["yes\nno\n"] * 2000], SPECS["qwen3"].specials, 8000, must_have=("yes", "no")
    )
    return testing.qwen3_checkpoint(
        path, tokenizer=tok, std=0.02, norm_std=None, num_hidden_layers=layers, **QWEN3_06B
    )


QUERY = "how do I pin a package version with apt preferences"


def short_docs(rr, texts: list[str], n: int, lo: int = 100, hi: int = 300) -> list[str]:
    """``n`` corpus documents of ``lo``-``hi`` tokens (seeded sample)."""
    tok = rr.tokenizer.tokenizer
    docs = [t for t in texts if lo <= len(tok.encode(t, add_special_tokens=False)) <= hi]
    return random.Random(0).sample(docs, n)


def timed(fn) -> tuple[object, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def bench_modernbert(args, texts) -> dict:
    from sentence_transformers import CrossEncoder

    from crossrank import Reranker

    model_dir = modernbert_checkpoint(CACHE / "modernbert-base", texts)
    ours = Reranker(model_dir, device="cpu", max_length=args.max_length)
    if args.long_docs:  # documents of 300-500 tokens: most pairs exceed the 128-token window
        pairs = [(QUERY, d) for d in short_docs(ours, texts, args.long_docs, 300, 500)]
    else:
        pairs = bm25_pairs(args.queries, args.per_query)
    peer = CrossEncoder(
        str(model_dir),
        device="cpu",
        max_length=args.max_length,
        activation_fn=torch.nn.Identity(),
    )
    ours.compute_score(pairs[:4])
    peer.predict(pairs[:4], batch_size=4)
    a, a_cpu, a_wall = timed(lambda: np.array(ours.compute_score(pairs)))
    b, b_cpu, b_wall = timed(lambda: np.asarray(peer.predict(pairs, batch_size=args.st_batch)))
    n_tokens = sum(len(e) for e in ours.tokenizer.encode(pairs))
    return {
        "pairs": len(pairs),
        "tokens": n_tokens,
        "crossrank": {"cpu_s": a_cpu, "wall_s": a_wall},
        "sentence-transformers": {"cpu_s": b_cpu, "wall_s": b_wall, "batch": args.st_batch},
        "speedup_cpu": b_cpu / a_cpu,
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def authors_scores(model, tokenizer, pairs, batch: int) -> np.ndarray:
    """The model card's process_inputs + compute_logits, in batches of ``batch``."""
    from crossrank.engine.qwen3_tokenize import DEFAULT_INSTRUCTION, PREFIX, SUFFIX

    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    out = []
    for i in range(0, len(pairs), batch):
        texts = [
            f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {q}\n<Document>: {d}"
            for q, d in pairs[i : i + batch]
        ]
        enc = tokenizer(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=8192 - len(prefix) - len(suffix),
        )
        enc["input_ids"] = [prefix + ids + suffix for ids in enc["input_ids"]]
        enc = tokenizer.pad(enc, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[:, -1, :]
        pair = torch.stack([logits[:, no], logits[:, yes]], dim=1)
        out.append(torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp())
    return torch.cat(out).numpy()


def bench_qwen3(args, texts) -> dict:
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

    from crossrank import Reranker

    model_dir = qwen3_checkpoint(CACHE / "qwen3-0.6b", texts, layers=28)
    # the authors' max_length (8192): nothing is cut, by either side
    ours = Reranker(model_dir, device="cpu", max_length=8192, normalize=True)
    pairs = [(QUERY, d) for d in short_docs(ours, texts, args.qwen3_pairs)]
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    peer = Qwen3ForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ours.compute_score(pairs[:2])
    authors_scores(peer, tok, pairs[:2], 2)
    lengths = [len(e) for e in ours.tokenizer.encode(pairs)]
    a, a_cpu, a_wall = timed(lambda: np.array(ours.compute_score(pairs)))
    b, b_cpu, b_wall = timed(lambda: authors_scores(peer, tok, pairs, args.qwen3_batch))
    return {
        "pairs": len(pairs),
        "tokens": sum(lengths),
        "crossrank": {"cpu_s": a_cpu, "wall_s": a_wall},
        "model card code": {"cpu_s": b_cpu, "wall_s": b_wall, "batch": args.qwen3_batch},
        "speedup_cpu": b_cpu / a_cpu,
        "max_abs_diff_p_yes": float(np.abs(a - b).max()),
    }


def bench_prefix(args, texts) -> dict:
    from crossrank import Reranker

    model_dir = qwen3_checkpoint(
        CACHE / f"qwen3-0.6b-{args.prefix_layers}l", texts, args.prefix_layers
    )
    shared = Reranker(model_dir, device="cpu", max_length=1024)
    unshared = Reranker(model_dir, device="cpu", max_length=1024, share_prefix=False)
    docs = short_docs(shared, texts, 100)
    pairs = [(QUERY, d) for d in docs]
    enc = shared.tokenizer.encode(pairs)
    shared.compute_score(pairs[:4])
    unshared.compute_score(pairs[:4])
    a, a_cpu, a_wall = timed(lambda: np.array(shared.compute_score(pairs)))
    b, b_cpu, b_wall = timed(lambda: np.array(unshared.compute_score(pairs)))
    return {
        "documents": len(docs),
        "layers": args.prefix_layers,
        "tokens": sum(len(e) for e in enc),
        "prefix_tokens": enc[0].prefix_len,
        "shared": {"cpu_s": a_cpu, "wall_s": a_wall},
        "unshared": {"cpu_s": b_cpu, "wall_s": b_wall},
        "speedup_cpu": b_cpu / a_cpu,
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default="modernbert,qwen3,prefix")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--queries", type=int, default=1, help="ModernBERT: dev queries")
    p.add_argument("--per-query", type=int, default=32, help="ModernBERT: candidates per query")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument(
        "--long-docs", type=int, default=0, help="ModernBERT: N documents of 300-500 tokens instead"
    )
    p.add_argument("--st-batch", type=int, default=32)
    p.add_argument("--qwen3-pairs", type=int, default=8)
    p.add_argument("--qwen3-batch", type=int, default=4)
    p.add_argument("--prefix-layers", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    texts = corpus_texts(4000)
    result = {
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    for what in args.what.split(","):
        result[what] = {"modernbert": bench_modernbert, "qwen3": bench_qwen3}.get(
            what, bench_prefix
        )(args, texts)
        print(what, json.dumps(result[what], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
