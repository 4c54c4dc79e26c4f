"""How often a pair's score changes with the batch it is scored in, per backend and family,
with and without ``deterministic=True``; and the mode's cost.

    PYTHONPATH=src python benchmarks/batch_invariance.py [--queries 4] [--candidates 64]
        [--families minilm,xlmr,gemma,minicpm,qwen3,modernbert,DIR] [--variants torch,torch-bf16,onnx,onnx-int8]
        [--server] [--json out.json]

Pairs: debian-ir dev queries x their BM25 candidates (``--queries`` x ``--candidates``). The
reference is every pair scored alone with one thread. Each configuration scores the same
pairs again: in shuffled batches of 4 / 32 / 256 (other neighbours, other padding) with 1 and
2 threads. Reported per configuration: scores that differ at all (bitwise), scores that differ
by more than 1e-6, and queries whose top-10 changed. ``--server`` adds the bundled model served
by ``crossrank serve`` (with and without ``--deterministic``) under 4 concurrent clients, each
sending /rerank requests of random size. The cost of the mode: pairs/s of one pass over all
pairs in the default batches, deterministic against default, same process (timings are only
meaningful on an otherwise idle machine).

Families other than ``minilm`` (the bundled reranker) are tiny random checkpoints from
:mod:`crossrank.testing`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
BATCHES = (4, 32, 256)
#: short names -> crossrank.testing's family names
FAMILIES = {"bert": "encoder", "minicpm": "minicpm-layerwise"}
THREADS = (1, 2)


def top10_changed(ref: np.ndarray, got: np.ndarray, groups: list[list[int]]) -> int:
    def top(s, idx):
        return set(np.array(idx)[np.argsort(-s[idx], kind="stable")[:10]].tolist())

    return sum(top(ref, g) != top(got, g) for g in groups)


def batched(rr, pairs: list[list[str]], size: int, seed: int) -> np.ndarray:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(order), size):
        part = order[s : s + size]
        out[part] = rr.compute_score([pairs[i] for i in part])
    return out


def measure(rr, pairs, groups) -> list[dict]:
    torch.set_num_threads(1)
    ref = np.array([rr.compute_score([p])[0] for p in pairs], dtype=np.float32)
    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        for size in BATCHES:
            got = batched(rr, pairs, size, seed=size * 10 + threads)
            rows.append(
                {
                    "threads": threads,
                    "batch": size,
                    "bitwise": int((got != ref).sum()),
                    "over_1e-6": int((np.abs(got - ref) > 1e-6).sum()),
                    "top10_changed": top10_changed(ref, got, groups),
                }
            )
    return rows


def speeds(rerankers: list, pairs, rounds: int = 3) -> list[float]:
    """Pairs/s of each reranker over all pairs (2 threads), best of ``rounds`` alternating
    runs, so a slower moment of the machine hits every mode alike."""
    torch.set_num_threads(2)
    best = [0.0] * len(rerankers)
    for rr in rerankers:
        rr.compute_score(pairs[:16])
    for _ in range(rounds):
        for i, rr in enumerate(rerankers):
            t0 = time.perf_counter()
            rr.compute_score(pairs)
            best[i] = max(best[i], len(pairs) / (time.perf_counter() - t0))
    return best


def checkpoint(family: str, root: Path) -> Path:
    """The bundled reranker (``minilm``), a checkpoint directory given by path, or a tiny
    random checkpoint of a family."""
    if Path(family).is_dir():
        return Path(family)
    if family == "minilm":
        from crossrank.hub import resolve_model_dir

        return resolve_model_dir("crossrank/minilm-debian")
    from crossrank.testing import roberta_checkpoint, tiny_checkpoint

    if family == "xlmr":
        return roberta_checkpoint(root / family)
    return tiny_checkpoint(FAMILIES.get(family, family), root / family)


def reranker(model: Path, variant: str, deterministic: bool):
    from crossrank import Reranker

    backend, _, kind = variant.partition("-")
    kwargs: dict = {"backend": backend, "device": "cpu", "show_progress": False}
    if kind == "int8":
        kwargs["quantize"] = "int8"
    elif kind:
        kwargs["dtype"] = kind
    if deterministic:
        kwargs["deterministic"] = True
    return Reranker(str(model), **kwargs)


def served(model: Path, rows: list[dict], deterministic: bool) -> dict:
    """Scores of the bundled model served under 4 concurrent clients, against alone."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from serving import serve  # a real `crossrank serve` on a free loopback port

    args = ["--model", str(model), "--device", "cpu"]
    args += ["--deterministic"] if deterministic else []
    by_query: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_query.setdefault(r["query"], []).append(i)
    requests = []
    rng = random.Random(1)
    for query, idx in by_query.items():
        idx = idx[:]
        rng.shuffle(idx)
        while idx:
            k = rng.choice([1, 3, 8, 20])
            requests.append((query, idx[:k]))
            idx = idx[k:]
    with tempfile.TemporaryDirectory() as tmp, serve(args, log=Path(tmp) / "log") as (base, _):

        def rerank(req):
            query, idx = req
            body = {"query": query, "texts": [rows[i]["passage"] for i in idx]}
            body["raw_scores"] = True
            out = httpx.post(f"{base}/rerank", json=body, timeout=120).json()
            return {idx[o["index"]]: o["score"] for o in out}

        alone = {}
        for query, idx in requests:
            for i in idx:
                alone.update(rerank((query, [i])))
        got: dict[int, float] = {}
        with ThreadPoolExecutor(4) as pool:
            for part in pool.map(rerank, requests):
                got.update(part)
    ref = np.array([alone[i] for i in range(len(rows))], dtype=np.float32)
    new = np.array([got[i] for i in range(len(rows))], dtype=np.float32)
    return {"bitwise": int((new != ref).sum()), "over_1e-6": int((np.abs(new - ref) > 1e-6).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--families", default="minilm,xlmr,gemma,minicpm,qwen3,modernbert")
    ap.add_argument("--variants", default="torch,torch-bf16,onnx,onnx-int8")
    ap.add_argument("--server", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import prepare

    from crossrank.cpu import describe

    rows = prepare.dev_pairs(args.queries, args.candidates)
    pairs = [[r["query"], r["passage"]] for r in rows]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["qid"], []).append(i)
    results = []
    print(f"{describe()}; {len(groups)} queries x {args.candidates} candidates\n")
    print(
        "| family | variant | mode | threads | batch | differ (bitwise) | differ > 1e-6 | top-10 changed |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            model = checkpoint(family, Path(tmp))
            for variant in args.variants.split(","):
                if variant.startswith("onnx") and model.name in ("gemma", "minicpm", "qwen3"):
                    continue  # the decoders have no ONNX export
                modes = (False, True) if variant.startswith("torch") else (False,)
                made = [reranker(model, variant, det) for det in modes]
                for rr, pps in zip(made, speeds(made, pairs)):
                    det = rr.options.deterministic
                    rec = {"family": family, "variant": variant, "deterministic": det}
                    rec["rows"] = measure(rr, pairs, list(groups.values()))
                    rec["pairs_per_s"] = pps
                    results.append(rec)
                    mode = "deterministic" if det else "default"
                    for r in rec["rows"]:
                        print(
                            f"| {family} | {variant} | {mode} | {r['threads']} | {r['batch']} | "
                            f"{r['bitwise']} / {len(pairs)} | {r['over_1e-6']} | "
                            f"{r['top10_changed']} / {len(groups)} |",
                            flush=True,
                        )
        print("\n| family | variant | default pairs/s | deterministic pairs/s | cost |")
        print("|---|---|---:|---:|---:|")
        for a, b in zip(results, results[1:]):
            if a["variant"] == b["variant"] and a["family"] == b["family"] and b["deterministic"]:
                print(
                    f"| {a['family']} | {a['variant']} | {a['pairs_per_s']:.1f} | "
                    f"{b['pairs_per_s']:.1f} | {a['pairs_per_s'] / b['pairs_per_s']:.2f}x |"
                )
        if args.server:
            model = checkpoint("minilm", Path(tmp))
            for det in (False, True):
                rec = served(model, rows, det)
                results.append({"server": True, "deterministic": det, **rec})
                print(
                    f"\nserver, 4 concurrent clients, deterministic={det}: {rec['bitwise']} / "
                    f"{len(rows)} scores differ bitwise from alone, {rec['over_1e-6']} by > 1e-6"
                )
    if args.json:
        args.json.write_text(json.dumps({"cpu": describe(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
