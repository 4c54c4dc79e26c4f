"""Next-token pretraining of a small random decoder (from ``scripts/random_decoder.py``) on the
reranker's own inputs, before ``crossrank train``: the step a real LLM reranker starts from.

    .venv/bin/python scripts/pretrain_decoder.py build/gemma-init train.jsonl build/gemma-lm \
        --steps 1000

Each training line's query and first positive are encoded exactly as the family's reranker
encodes a pair (``Reranker(...).tokenizer``: bge's ``A: query\\nB: passage\\nprompt``, Qwen3's
template, ...), and the decoder learns to predict every next token. The next-token head is the
transposed embedding matrix (Gemma's and Qwen3's own tied head; for MiniCPM-layerwise, whose
heads score, a temporary one that is not saved). The layers, norms and embeddings are saved
under the Hugging Face names beside the init's config and tokenizer, so the result is a
checkpoint of the same family that ``crossrank train`` fine-tunes. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from crossrank import Reranker
from crossrank.models.attention import unpack_rows
from crossrank.models.weights import write_checkpoint


def sequences(tokenizer, data: Path) -> list[list[int]]:
    """Token ids of (query, first positive) of every training line, by the family's pair rule
    ``tokenizer`` (a Reranker's)."""
    pairs = []
    with open(data, encoding="utf-8") as fh:
        for line in fh:
            example = json.loads(line)
            pairs.append((example["query"], example["pos"][0]))
    return [list(e.ids) for e in tokenizer.encode(pairs)]


def lm_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the real tokens of right-padded ``ids``."""
    b, s = ids.shape
    # the layers run on the real tokens, packed
    packing, x, rope = model.packed_inputs(ids, mask, torch.arange(s).expand(b, s))
    for layer in model.model.layers:
        x, _, _ = layer(x, rope, packing)
    x = unpack_rows(x, packing.index, b * s).view(b, s, -1)
    logits = model.model.norm(x)[:, :-1] @ model.model.embed_tokens.weight.T
    target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("init", type=Path, help="random decoder checkpoint (scripts/random_decoder.py)")
    ap.add_argument("data", type=Path, help="training JSON lines ({'query', 'pos', ...})")
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--prompt", help="bge families: the prompt after the pair (default: theirs)")
    ap.add_argument("--instruction", help="Qwen3: the task instruction (default: the authors')")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    options = {k: v for k, v in (("prompt", args.prompt), ("instruction", args.instruction)) if v}
    # one load: the Reranker gives the family's pair rule and the model it wraps, trained here
    reranker = Reranker(args.init, device="cpu", max_length=args.max_length, **options)
    seqs = sequences(reranker.tokenizer, args.data)
    model = reranker.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    start, step, losses = time.perf_counter(), 0, []
    order: list[int] = []
    while step < args.steps:
        if len(order) < args.batch_size:
            order += rng.sample(range(len(seqs)), len(seqs))
        batch = [seqs[i] for i in order[: args.batch_size]]
        del order[: args.batch_size]
        width = max(len(s) for s in batch)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in batch])
        mask = torch.tensor([[True] * len(s) + [False] * (width - len(s)) for s in batch])
        # linear warmup over the first 10% of the steps, then cosine decay
        warmup = max(1, args.steps // 10)
        frac = max(0.0, (step - warmup) / max(1, args.steps - warmup))
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = lm_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 100 == 0:
            mean = sum(losses[-100:]) / 100
            elapsed = time.perf_counter() - start
            print(f"step {step} loss {mean:.3f} lr {lr:.2e} {elapsed:.0f}s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    raw = json.loads((args.init / "config.json").read_text())
    write_checkpoint(args.out, model.checkpoint_state(), raw, tokenizer_dir=args.init)
    print(f"{args.out}: {step} steps, last loss {sum(losses[-100:]) / min(100, len(losses)):.3f}")


if __name__ == "__main__":
    main()
