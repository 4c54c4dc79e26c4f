"""One timed LLM-reranker scoring run in its own process; prints one JSON object on stdout.

Run by llm_cpu.py, never imported: crossrank runs in the project's environment, FlagEmbedding
and sentence-transformers in the peers' virtual environment (which lacks crossrank).

    python llm_worker.py --lib crossrank|flag-llm|st --model DIR --pairs FILE
                         [--batch-size N] [--backend torch|auto] [--dtype fp32|bf16]
                         [--quantize int8] [--repeats R]

* ``crossrank``: ``Reranker(model, backend=..., dtype=..., quantize=...)``, raw scores;
* ``flag-llm``: FlagEmbedding's ``FlagLLMReranker`` (fp32, the given batch size), raw scores
  (the "Yes" logit);
* ``st``: sentence-transformers' ``CrossEncoder(model)``, which loads a ``*ForCausalLM``
  checkpoint with its ``LogitScore`` head (logit("yes") - logit("no") at the last token, left
  padding) and renders each pair with the checkpoint's chat template
  (``chat_template.jinja``, the Qwen3-Reranker format); raw scores.

A warm-up pass over all the pairs precedes the timed runs (its seconds are reported as
``first_pass_seconds``: torch.compile's first graphs for crossrank's int8). The JSON holds
each timed run's seconds, the scores of the last one and the process's peak resident memory
(``VmHWM``: load included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def load_pairs(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as fh:
        return [[r["query"], r["passage"]] for r in map(json.loads, fh)]


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def scorer(args):
    """A function pairs -> list of float scores for the chosen library."""
    if args.lib == "crossrank":
        from crossrank import Reranker

        rr = Reranker(
            args.model,
            backend=args.backend,
            dtype=None if args.backend == "auto" else args.dtype,
            quantize=args.quantize,
            batch_size=args.batch_size,
            show_progress=False,
        )
        if rr.backend_choice is not None:
            args.choice = rr.backend_choice.as_dict()
            print(f"auto: {rr.backend_choice.reason}", file=sys.stderr)
        return lambda pairs: [float(s) for s in rr.compute_score(pairs)]
    if args.lib == "flag-llm":
        from FlagEmbedding import FlagLLMReranker

        fr = FlagLLMReranker(
            args.model, use_fp16=False, devices="cpu", batch_size=args.batch_size, max_length=512
        )
        return lambda pairs: [float(s) for s in fr.compute_score(pairs)]
    if args.lib == "st":
        import torch
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(args.model, device="cpu", max_length=512)
        return lambda pairs: [
            float(s)
            for s in ce.predict(
                pairs,
                batch_size=args.batch_size,
                activation_fn=torch.nn.Identity(),
                show_progress_bar=False,
            )
        ]
    raise SystemExit(f"unknown lib {args.lib}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    import torch

    pairs = load_pairs(args.pairs)
    t0 = time.perf_counter()
    score = scorer(args)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    score(pairs)  # warm-up: a whole pass (allocations, oneDNN's kernels, compiled graphs)
    first_s = time.perf_counter() - t0
    times, scores = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scores = score(pairs)
        times.append(time.perf_counter() - t0)
    json.dump(
        {
            "lib": args.lib,
            "batch_size": args.batch_size,
            "backend": args.backend,
            "dtype": args.dtype,
            "quantize": args.quantize,
            "choice": getattr(args, "choice", None),
            "load_seconds": load_s,
            "first_pass_seconds": first_s,
            "seconds": times,
            "n_pairs": len(pairs),
            "torch_threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
            "scores": scores,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
