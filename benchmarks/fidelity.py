"""How far each backend / dtype moves scores and rankings from crossrank's torch fp32.

    PYTHONPATH=src python benchmarks/fidelity.py [--model DIR] [--queries 50]
        [--variants onnx,onnx-int8] [--json out.json]

On the same pairs (debian-ir dev queries x their BM25 top-100, documents ``"title text"``)
it reports, for every variant against torch fp32: the largest absolute score difference, the
mean per-query Spearman correlation of the scores, and nDCG@10 of the reranked lists (and its
change), computed with ir-measures (pytrec_eval) on the dev qrels. The BM25 run's own nDCG@10
on the same queries is printed for context.

Variants: ``onnx`` (fp32), ``onnx-int8`` (the int8 format of this CPU), ``onnx-int8-u8u8``
(the u8 x u8 format crossrank uses on x86 CPUs without VNNI, on any CPU: the same integer
products as there), ``torch-bf16``. The default model is the bundled
reranker ``models/minilm-debian`` (the benchmark's ``minilm``, benchmarks/prepare.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        next(fh)  # header
        for line in fh:
            q, d, rel = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(rel)
    return qrels


def ndcg10(qrels: dict, rows: list[dict], scores: np.ndarray) -> float:
    import ir_measures
    from ir_measures import nDCG

    run: dict[str, dict[str, float]] = {}
    for r, s in zip(rows, scores):
        run.setdefault(r["qid"], {})[r["docid"]] = float(s)
    qrels = {q: v for q, v in qrels.items() if q in run}
    return float(ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10])


def score(model: Path, variant: str, pairs: list[list[str]]) -> tuple[np.ndarray, float]:
    from crossrank import Reranker

    backend, _, kind = variant.partition("-")
    kind, _, scheme = kind.partition("-")
    kwargs: dict = {"backend": backend}
    if kind == "int8":
        kwargs["quantize"] = "int8"
    elif kind:
        kwargs["dtype"] = kind
    if scheme:  # onnx-int8-u8u8: the int8 format of x86 CPUs without VNNI, on any CPU
        os.environ["CROSSRANK_INT8_SCHEME"] = scheme
    try:
        rr = Reranker(model, device="cpu", show_progress=True, **kwargs)
    finally:
        os.environ.pop("CROSSRANK_INT8_SCHEME", None)
    t0 = time.perf_counter()
    out = np.array(rr.compute_score(pairs), dtype=np.float64)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--variants", default="onnx,onnx-int8")
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import prepare

    from crossrank.engine.calibrate import spearman  # average ranks for ties

    model = args.model or prepare.build("minilm", args.cache)
    rows = prepare.dev_pairs(args.queries, args.candidates)
    pairs = [[r["query"], r["passage"]] for r in rows]
    qrels = read_qrels(prepare.DATA / "qrels" / "dev.tsv")
    bm25 = ndcg10(qrels, rows, -np.array([i % args.candidates for i in range(len(rows))]))
    ref, ref_s = score(model, "torch", pairs)
    ref_ndcg = ndcg10(qrels, rows, ref)
    qids = [r["qid"] for r in rows]
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(qids):
        groups.setdefault(q, []).append(i)
    results = [
        {
            "variant": "torch fp32",
            "seconds": ref_s,
            "max_abs_diff": 0.0,
            "spearman": 1.0,
            "ndcg10": ref_ndcg,
            "delta": 0.0,
        }
    ]
    for variant in [v for v in args.variants.split(",") if v]:
        got, secs = score(model, variant, pairs)
        rho = [spearman(ref[idx], got[idx]) for idx in groups.values()]
        nd = ndcg10(qrels, rows, got)
        results.append(
            {
                "variant": variant,
                "seconds": secs,
                "max_abs_diff": float(np.abs(got - ref).max()),
                "spearman": float(np.mean(rho)),
                "min_spearman": float(np.min(rho)),
                "ndcg10": nd,
                "delta": nd - ref_ndcg,
            }
        )
    print(
        f"\n{model}: {len(groups)} dev queries x {args.candidates} BM25 candidates "
        f"({len(rows)} pairs); BM25 nDCG@10 {bm25:.4f}\n"
    )
    print("| variant | seconds | max abs diff | mean Spearman | nDCG@10 | change |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['variant']} | {r['seconds']:.1f} | {r['max_abs_diff']:.2e} | "
            f"{r['spearman']:.4f} | {r['ndcg10']:.4f} | {r['delta']:+.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "bm25": bm25, "rows": results}))


if __name__ == "__main__":
    main()
