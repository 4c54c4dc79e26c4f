"""Effect of ``crossrank score --chunk-size`` on speed: the engine sorts pairs by length only
within a chunk, so small chunks pad more. Scores real debian-ir pairs with the bundled model
through :func:`crossrank.scoring.score_stream` (what ``crossrank score`` runs), once per chunk
size per round, rounds interleaved; prints a markdown table (best round per size) with the
wall time and the process CPU time (steadier than wall time on a shared machine; with
``--threads 1`` it is the work done).

    PYTHONPATH=src .venv/bin/python benchmarks/chunk_size.py --pairs 2000 --sizes 64,256,1024,0 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/debian-ir")


def load_pairs(data: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (query, passage) pairs drawn at random from the dev BM25 top-100 run."""
    from crossrank.eval.beir import read_corpus
    from crossrank.files import read_jsonl

    queries = {o["_id"]: o["text"] for _, o in read_jsonl(str(data / "queries.jsonl"))}
    corpus = read_corpus(data / "corpus.jsonl")
    run = (data / "dev.bm25.top100.run").read_text(encoding="utf-8").splitlines()
    run = [line.split()[:3] for line in run]
    picked = random.Random(seed).sample(run, n)
    return [(queries[q], corpus[d]) for q, _, d in picked]


def padding_share(rr, pairs: list[tuple[str, str]], size: int) -> float:
    """Padded tokens over real tokens when the engine batches ``pairs`` chunk by chunk
    (attention runs on the padded layout; the linear layers on real tokens only)."""
    from crossrank.engine.batching import plan_batches

    lengths = np.array([len(e.ids) for e in rr.engine.tokenizer.encode(pairs)])
    padded = 0
    for start in range(0, len(lengths), size):
        chunk = lengths[start : start + size]
        for batch in plan_batches(chunk, max_tokens=rr.engine.max_tokens):
            padded += int(chunk[batch].max()) * len(batch)
    return padded / int(lengths.sum()) - 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="crossrank/minilm-debian")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--sizes", default="32,128,512,2048,0", help="chunk sizes; 0 = all pairs")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds (0: padding only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from crossrank import Reranker
    from crossrank.scoring import score_stream

    pairs = load_pairs(args.data, args.pairs, args.seed)
    rr = Reranker(args.model, device="cpu", show_progress=False)
    sizes = [int(s) or len(pairs) for s in args.sizes.split(",")]
    padding = {size: padding_share(rr, pairs, size) for size in sizes}
    print("| chunk size | padded tokens / real tokens (batches of the token budget) |")
    print("|---:|---:|")
    for size in sizes:
        print(f"| {size} | {padding[size]:.3f} |")
    if args.rounds < 1:
        return
    rr.compute_score(pairs[:64])  # warm-up
    best: dict[int, float] = {}
    best_cpu: dict[int, float] = {}
    loads: dict[int, list[float]] = {s: [] for s in sizes}
    scores: dict[int, np.ndarray] = {}
    for _ in range(args.rounds):
        for size in sizes:
            loads[size].append(os.getloadavg()[0])
            t0, c0 = time.perf_counter(), time.process_time()
            got = np.array(list(score_stream(rr, iter(pairs), chunk_size=size)))
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - c0
            best_cpu[size] = min(best_cpu.get(size, float("inf")), cpu)
            loads[size].append(os.getloadavg()[0])
            best[size] = min(best.get(size, float("inf")), seconds)
            scores[size] = got
            print(f"chunk {size}: {seconds:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    ref = scores[max(sizes)]
    full_cpu = best_cpu[max(sizes)]
    print(
        f"\n{len(pairs)} pairs, {args.model}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| chunk size | best wall s | pairs/s (wall) | best CPU s | pairs per CPU s "
        "| CPU time vs one chunk | max abs diff | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        label = f"{size} (all)" if size == len(pairs) else str(size)
        diff = float(np.abs(scores[size] - ref).max())
        print(
            f"| {label} | {best[size]:.2f} | {len(pairs) / best[size]:.1f} | "
            f"{best_cpu[size]:.2f} | {len(pairs) / best_cpu[size]:.1f} | "
            f"{best_cpu[size] / full_cpu:.2f}x | {diff:.1e} | "
            f"{min(loads[size]):.1f}-{max(loads[size]):.1f} |"
        )


if __name__ == "__main__":
    main()
