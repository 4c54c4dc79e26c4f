"""One timed scoring run in its own process; prints one JSON object on stdout.

Run by bench.py, never imported: crossrank runs in the project's environment, FlagEmbedding
and sentence-transformers in the peers' virtual environment (which lacks crossrank).

    python worker.py --lib crossrank|flag|st --model DIR --pairs FILE [--batch-size N]
                     [--backend torch|onnx|auto] [--quantize int8] [--repeats R]
                     [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--export-dir DIR]

Every library loads the same checkpoint directory and scores the same pairs (raw logits, in
input order). A short warm-up run (first 32 pairs) precedes the timed runs; the JSON holds
every timed run's seconds and the scores of the last one.
"""

from __future__ import annotations

import argparse
import json
import os
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
    """A function pairs -> list of float logits for the chosen library."""
    if args.lib == "crossrank":
        from crossrank import Reranker

        rr = Reranker(
            args.model,
            device=args.device,
            dtype=None if args.backend == "auto" else args.dtype,
            batch_size=args.batch_size,
            backend=args.backend,
            quantize=args.quantize,
            show_progress=False,
            **({"max_batch_tokens": args.max_tokens} if args.max_tokens else {}),
        )
        if rr.backend_choice is not None:  # backend="auto": what it measured and chose
            args.choice = rr.backend_choice.describe()
            print(f"auto: {rr.backend_choice.reason}", file=sys.stderr)
        return lambda pairs: rr.compute_score(pairs)
    if args.lib == "flag":
        from FlagEmbedding import FlagReranker

        if args.dtype not in ("fp32", "fp16"):
            raise SystemExit("FlagReranker runs fp32 or fp16 only")
        fr = FlagReranker(
            args.model,
            use_fp16=args.dtype == "fp16",
            devices=args.device,
            batch_size=args.batch_size,
        )
        return lambda pairs: [float(s) for s in fr.compute_score(pairs)]
    if args.lib == "flag-llm":
        from FlagEmbedding import FlagLLMReranker

        if args.dtype != "fp32":
            raise SystemExit("flag-llm runs fp32 here")
        fl = FlagLLMReranker(
            args.model, use_fp16=False, devices=args.device, batch_size=args.batch_size
        )
        return lambda pairs: [float(s) for s in fl.compute_score(pairs)]
    if args.lib == "st":
        import torch

        ce = st_cross_encoder(args)
        kw = {"batch_size": args.batch_size} if args.batch_size else {}
        return lambda pairs: [
            float(s)
            for s in ce.predict(
                pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False, **kw
            )
        ]
    raise SystemExit(f"unknown lib {args.lib}")


def st_cross_encoder(args):
    """sentence-transformers' CrossEncoder on the backend a user would pick for speed:
    ``torch``; ``onnx`` (fp32, or ``--quantize int8``: its own dynamic int8 export for this
    CPU, ``avx512_vnni`` where present, else ``avx2``); ``openvino`` at its default precision
    (bf16 inference on CPUs with bf16 units) or ``--dtype fp32`` (``INFERENCE_PRECISION_HINT``
    f32). Exports are written once under ``--export-dir``."""
    import shutil
    from pathlib import Path

    import torch
    from sentence_transformers import CrossEncoder

    if args.backend == "torch":
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        return CrossEncoder(
            args.model,
            device=args.device,
            max_length=512,
            model_kwargs={"torch_dtype": dtypes[args.dtype]},
        )
    export = Path(args.export_dir) / args.backend
    if not (export / "config.json").is_file():  # export once: checkpoint + ONNX / OpenVINO
        tmp = export.with_name(export.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        CrossEncoder(args.model, backend=args.backend, max_length=512).save_pretrained(str(tmp))
        tmp.rename(export)
    kwargs: dict = {}
    if args.backend == "onnx" and args.quantize == "int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        flags = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
        config = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
        name = f"onnx/model_qint8_{config}.onnx"
        if not (export / name).is_file():
            ce = CrossEncoder(str(export), backend="onnx", max_length=512)
            export_dynamic_quantized_onnx_model(ce, config, str(export))
        kwargs["file_name"] = name
    if args.backend == "openvino" and args.dtype == "fp32":
        kwargs["ov_config"] = {"INFERENCE_PRECISION_HINT": "f32"}
    return CrossEncoder(str(export), backend=args.backend, max_length=512, model_kwargs=kwargs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--export-dir", default=None, help="st onnx/openvino: where exports live")
    ap.add_argument("--warmup", default="32", help="pairs scored before timing, or 'all'")
    args = ap.parse_args()
    import torch

    pairs = load_pairs(args.pairs)
    t0 = time.perf_counter()
    score = scorer(args)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()  # warm-up: first ONNX session run, allocator, compiled graphs
    score(pairs if args.warmup == "all" else pairs[: int(args.warmup)])
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
            "quantize": args.quantize,
            "device": args.device,
            "dtype": args.dtype,
            "choice": getattr(args, "choice", None),
            "load_seconds": load_s,
            "first_pass_seconds": first_s,
            "peak_rss_mb": peak_rss_mb(),
            "seconds": times,
            "n_pairs": len(pairs),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "scores": scores,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
