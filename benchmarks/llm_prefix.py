"""Query-prefix sharing for LLM rerankers: one query, 100 passages of 100-300 tokens.

Runs, in one process on the same random Gemma-shaped checkpoint (built here with transformers):

* ``reference``: FlagLLMReranker's way (inputs by its rules, length-sorted batches of 128,
  transformers' GemmaForCausalLM computing logits over the whole vocabulary at every position,
  "Yes" logit at the last position);
* ``crossrank unshared``: our forward, ``share_prefix=False``;
* ``crossrank shared``: our forward with the query prefix's keys/values computed once.

The model keeps Gemma's proportions at a small size (multi-query attention, head_dim 64,
FFN 4 x hidden, vocabulary sized so the output projection costs what Gemma's does relative to
its layers). Scores of all three are compared; timings are the best of ``--repeats``, in
process CPU seconds (one thread by default, so CPU time is compute time even on a busy
machine) and wall seconds.

    PYTHONPATH=src nice -n 10 /work/main/.venv/bin/python benchmarks/llm_prefix.py
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

WORDS = (  # noqa: SIM905
    "the giant panda is a bear species endemic to china debian is a free operating system "
    "for your computer a reranker orders candidate passages by their relevance to a query "
    "search engines rank documents cross encoders rescore the top hundred candidates pandas "
    "eat bamboo and live in the mountains packages kernel install upgrade network driver"
).split()


def build_checkpoint(path: Path, hidden: int, layers: int, vocab: int) -> None:
    from crossrank import testing
    from crossrank.testing.decoders import SPECS

    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=50)) for _ in range(200)] + ["Yes No A: B:\n"] * 20
    # small vocabulary: words split into several tokens
    tok = testing.bpe_tokenizer(corpus, SPECS["gemma"].specials, vocab_size=300)
    testing.gemma_checkpoint(
        path,
        tokenizer=tok,
        std=0.02,
        norm_std=None,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=1,
        head_dim=64,
        hidden_act="gelu_pytorch_tanh",
        max_position_embeddings=2048,
        rope_theta=10000.0,
    )


def make_pairs(model_dir: Path, n: int, query_tokens: int, seed: int = 0):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    rng = random.Random(seed)

    def text_of(n_tokens: int) -> str:
        words: list[str] = []
        while len(tok.encode(" ".join(words), add_special_tokens=False).ids) < n_tokens:
            words.append(rng.choice(WORDS))
        return " ".join(words)

    query = text_of(query_tokens)
    return [(query, text_of(rng.randint(100, 300))) for _ in range(n)]


def reference_scores(model, lt, pairs) -> np.ndarray:
    """FlagLLMReranker's loop over transformers' model (inputs by crossrank's tokenizer,
    whose ids tests/test_llm_tokenize.py pins to the reference rules)."""
    encoded = [e.ids for e in lt.encode(pairs)]
    order = np.argsort([-len(x) for x in encoded], kind="stable")
    out = np.zeros(len(pairs), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            seq = max(len(encoded[i]) for i in idx)
            seq = (seq + 7) // 8 * 8  # the reference pads to a multiple of 8
            ids = torch.zeros(len(idx), seq, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = mask.sum(1) - 1
            out[idx] = logits[torch.arange(len(idx)), last, lt.yes_id].numpy()
    return out


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best process CPU seconds of ``repeats`` runs, and the result.

    CPU time is the fairer figure on a shared machine (other jobs inflate wall time)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=100)
    ap.add_argument("--query-tokens", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from crossrank import Reranker

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "gemma"
        build_checkpoint(model_dir, args.hidden, args.layers, args.vocab)
        from transformers import GemmaForCausalLM

        hf_model = GemmaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        shared = Reranker(model_dir, device="cpu", max_length=512)
        unshared = Reranker(model_dir, device="cpu", max_length=512, share_prefix=False)
        print(
            f"model: Gemma-shaped, hidden {args.hidden}, {args.layers} layers, "
            f"{args.hidden // 64} heads / 1 KV head, vocab {args.vocab}; "
            f"{args.passages} passages of 100-300 tokens; {args.threads} threads; "
            f"best of {args.repeats}\n"
        )
        print(
            "| query tokens | prefix tokens | mean input tokens | reference CPU s "
            "| crossrank unshared CPU s | crossrank shared CPU s | shared vs unshared "
            "| shared vs reference | wall s (ref / unshared / shared) | max abs diff |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for qt in args.query_tokens:
            pairs = make_pairs(model_dir, args.passages, qt)
            enc = shared.tokenizer.encode(pairs)
            mean_len = statistics.mean(len(e) for e in enc)
            w_ref, t_ref, ref = timed(
                lambda p=pairs: reference_scores(hf_model, shared.tokenizer, p), args.repeats
            )
            w_un, t_un, un = timed(
                lambda p=pairs: np.array(unshared.compute_score(p)), args.repeats
            )
            w_sh, t_sh, sh = timed(lambda p=pairs: np.array(shared.compute_score(p)), args.repeats)
            diff = max(np.abs(sh - ref).max(), np.abs(un - ref).max())
            print(
                f"| {qt} | {enc[0].prefix_len} | {mean_len:.0f} | {t_ref:.2f} | {t_un:.2f} | "
                f"{t_sh:.2f} | {t_un / t_sh:.2f}x | {t_ref / t_sh:.2f}x | "
                f"{w_ref:.2f} / {w_un:.2f} / {w_sh:.2f} | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
