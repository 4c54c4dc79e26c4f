"""Effect of ``crossrank score --chunk-size`` on speed: the engine sorts pairs by length only
within a chunk, so small chunks pad more. Scores real debian-ir pairs with the bundled model
through :func:`crossrank.scoring.score_stream` (what ``crossrank score`` runs), once per chunk
size per round, rounds interleaved; prints a markdown table (best round per size).

    PYTHONPATH=src .venv/bin/python benchmarks/chunk_size.py --pairs 3000 --sizes 32,128,512,2048,0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/debian-ir")


def load_pairs(data: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (query, passage) pairs drawn at random from the dev BM25 top-100 run."""
    queries = {}
    for line in open(data / "queries.jsonl", encoding="utf-8"):
        o = json.loads(line)
        queries[o["_id"]] = o["text"]
    corpus = {}
    for line in open(data / "corpus.jsonl", encoding="utf-8"):
        o = json.loads(line)
        title = (o.get("title") or "").strip()
        corpus[o["_id"]] = f"{title} {o['text']}" if title else o["text"]
    run = [line.split()[:3] for line in open(data / "dev.bm25.top100.run", encoding="utf-8")]
    picked = random.Random(seed).sample(run, n)
    return [(queries[q], corpus[d]) for q, _, d in picked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="crossrank/minilm-debian")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--sizes", default="32,128,512,2048,0", help="chunk sizes; 0 = all pairs")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from crossrank import Reranker
    from crossrank.scoring import score_stream

    pairs = load_pairs(args.data, args.pairs, args.seed)
    rr = Reranker(args.model, device="cpu", show_progress=False)
    sizes = [int(s) or len(pairs) for s in args.sizes.split(",")]
    rr.compute_score(pairs[:64])  # warm-up
    best: dict[int, float] = {}
    loads: dict[int, list[float]] = {s: [] for s in sizes}
    scores: dict[int, np.ndarray] = {}
    for _ in range(args.rounds):
        for size in sizes:
            loads[size].append(os.getloadavg()[0])
            t0 = time.perf_counter()
            got = np.array(list(score_stream(rr, iter(pairs), chunk_size=size)))
            seconds = time.perf_counter() - t0
            loads[size].append(os.getloadavg()[0])
            best[size] = min(best.get(size, float("inf")), seconds)
            scores[size] = got
            print(f"chunk {size}: {seconds:.2f} s", flush=True)
    ref = scores[max(sizes)]
    full = best[max(sizes)]
    print(
        f"\n{len(pairs)} pairs, {args.model}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| chunk size | best s | pairs/s | time vs one chunk | max abs diff | load |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        label = f"{size} (all)" if size == len(pairs) else str(size)
        diff = float(np.abs(scores[size] - ref).max())
        print(
            f"| {label} | {best[size]:.2f} | {len(pairs) / best[size]:.1f} | "
            f"{best[size] / full:.2f}x | {diff:.1e} | {min(loads[size]):.1f}-{max(loads[size]):.1f} |"
        )


if __name__ == "__main__":
    main()
