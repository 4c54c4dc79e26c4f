"""crossrank vs FlagEmbedding vs sentence-transformers: one run, same checkpoint, same pairs.

    PYTHONPATH=src python benchmarks/bench.py [--models minilm,base] [--queries 10]
        [--candidates 100] [--base-queries 1] [--flag-batch-sizes 8,16,32,64,128]
        [--ours torch,onnx,onnx-int8] [--rounds 2] [--json results.json]

The peers run in ``benchmarks/.venv-peers``, created on first use with
``pip install -c constraints.txt FlagEmbedding 'transformers<5' sentence-transformers`` (the
constraints keep the CPU build of torch 2.13.0). Each run is a subprocess (``worker.py``) that
loads the checkpoint directory and the pairs file and reports its timings as JSON.

Printed per run: pairs/s, tokens/s (real tokens, FlagEmbedding's input rules), the ratio to
FlagEmbedding at its best batch size, model FLOP utilisation (matrix-product FLOPs of the real
tokens per second over an fp32 matmul peak measured at the start of the run) and the largest
score difference to crossrank's torch fp32 scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv-peers"
PEER_PACKAGES = ["FlagEmbedding", "transformers<5", "sentence-transformers[onnx,openvino]"]


def peers_python() -> Path:
    """The peers' interpreter, creating and filling their virtual environment if needed."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.is_file() or stamp.read_text().strip() != " ".join(PEER_PACKAGES):
        if not py.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        cmd = [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
        subprocess.run(cmd + PEER_PACKAGES, check=True)
        stamp.write_text(" ".join(PEER_PACKAGES) + "\n")
    return py


def cpu_description() -> str:
    """The CPU's model name, the features its kernels use (CPUID, as crossrank reads them:
    right under an emulator too), the int8 format crossrank uses there, and the core count."""
    from crossrank.cpu import describe, int8_scheme

    return f"{describe()}, int8 {int8_scheme()}"


def peer_versions(py: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({p: m.version(p) for p in "
        "['FlagEmbedding','sentence-transformers','transformers','torch','onnxruntime',"
        "'openvino','optimum']}))"
    )
    return json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout)


def matmul_peak(device: str = "cpu", dtype: str = "fp32", repeats: int = 5) -> float:
    """Best GFLOP/s of a matrix product (CPU: fp32 2048x1024 @ 1024x4096 with torch's default
    threads; CUDA: 8192^3 in ``dtype``)."""
    import torch

    from crossrank.inputs import DTYPES

    dt = DTYPES[dtype]
    m, k, n = (2048, 1024, 4096) if device == "cpu" else (8192, 8192, 8192)
    a = torch.randn(m, k, device=device, dtype=dt)
    b = torch.randn(k, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * m * k * n / best / 1e9


def model_flops(config: dict, lengths: list[int]) -> float:
    """Matrix-product FLOPs of a forward pass over sequences of ``lengths`` real tokens."""
    h, f, n_layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    total = 0.0
    for n in lengths:
        linear = 2 * n * (4 * h * h + 2 * h * f)
        attention = 4 * n * n * h  # QK^T and attention @ V
        total += n_layers * (linear + attention) + 2 * (h * h + h)
    return total


def pair_lengths(model_dir: Path, pairs: list[list[str]]) -> list[int]:
    from crossrank import Reranker

    rr = Reranker(model_dir, device="cpu")
    return [len(e) for e in rr.tokenizer.encode(pairs)]


def run_worker(python: Path, args: list[str], env: dict[str, str]) -> dict:
    before = os.getloadavg()[0]
    proc = subprocess.run(
        [str(python), str(HERE / "worker.py"), *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"worker failed: {' '.join(args)}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_avg"] = [before, os.getloadavg()[0]]
    return out


def bench_model(name: str, model_dir: Path, pairs_file: Path, args, peers_py: Path, peak: float):
    import numpy as np

    with open(pairs_file, encoding="utf-8") as fh:
        pairs = [[r["query"], r["passage"]] for r in map(json.loads, fh)]
    queries = [q for q, _ in pairs]
    lengths = pair_lengths(model_dir, pairs)
    config = json.loads((model_dir / "config.json").read_text())
    flops = model_flops(config, lengths)
    common = ["--model", str(model_dir), "--pairs", str(pairs_file), "--device", args.device]
    env_ours = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env_peers = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    plan = []  # (label, python, worker args, env)
    for variant in args.ours:
        backend, _, kind = variant.partition("-")
        extra = ["--backend", backend]
        if kind == "int8":
            extra += ["--quantize", "int8"]
        if backend != "auto":  # auto picks the dtype too
            extra += ["--dtype", kind if kind in ("fp16", "bf16") else "fp32"]
        label = f"crossrank {variant}" + ("" if kind or backend == "auto" else " fp32")
        plan.append((label, Path(sys.executable), ["--lib", "crossrank", *extra], env_ours))
    flag_dtype = "fp16" if args.device.startswith("cuda") else "fp32"
    for bs in args.flag_batch_sizes:
        fargs = ["--lib", "flag", "--batch-size", str(bs), "--dtype", flag_dtype]
        plan.append((f"FlagReranker {flag_dtype} bs={bs}", peers_py, fargs, env_peers))
    export_dir = args.cache / f"st-exports-{name}"
    for variant in args.st_backends if args.device == "cpu" else ["torch"]:
        backend, _, kind = variant.partition("-")
        sargs = ["--lib", "st", "--backend", backend, "--export-dir", str(export_dir)]
        if kind == "int8":
            sargs += ["--quantize", "int8"]
        dtype = "fp32" if kind in ("fp32", "int8") or backend != "openvino" else "default"
        sargs += ["--dtype", flag_dtype if backend == "torch" else dtype]
        what = {"torch": flag_dtype, "onnx": kind or "fp32", "openvino": kind or "default"}
        label = f"sentence-transformers {backend} {what[backend]}"
        plan.append((label, peers_py, sargs, env_peers))
    # rounds: every configuration once per round, so load changes hit all of them alike
    by_label: dict[str, dict] = {}
    for rnd in range(args.rounds):
        for label, py, wargs, env in plan:
            r = run_worker(py, [*wargs, *common], env)
            print(
                f"  round {rnd + 1} {label}: {r['seconds'][0]:.2f}s (load {r['load_avg'][0]:.1f})",
                file=sys.stderr,
                flush=True,
            )
            if label in by_label:
                prev = by_label[label]
                prev["seconds"] += r["seconds"]
                prev["load_avg"] += r["load_avg"]
            else:
                by_label[label] = dict(r, label=label)
    runs = list(by_label.values())
    for r in runs:  # what auto chose, in its label
        if r.get("choice"):
            r["label"] += f" ({r['choice']})"

    ref_label = "crossrank " + args.ours[0] + ("" if "-" in args.ours[0] else " fp32")
    ref = next((np.array(r["scores"]) for r in runs if r["label"] == ref_label), None)
    flag_best = min((min(r["seconds"]) for r in runs if r["lib"] == "flag"), default=None)
    rows = []
    for r in runs:
        sec = min(r["seconds"])
        scores = np.array(r.pop("scores"))
        rows.append(
            {
                **r,
                "model": name,
                "cpu": cpu_description(),
                "best_seconds": sec,
                "pairs_per_s": len(pairs) / sec,
                "tokens_per_s": sum(lengths) / sec,
                "vs_flag_best": (flag_best / sec) if flag_best else None,
                "mfu": flops / sec / (peak * 1e9),
                "max_abs_diff": float(np.abs(scores - ref).max()) if ref is not None else None,
                "spearman": mean_spearman(queries, scores, ref) if ref is not None else None,
            }
        )
    return {
        "model": name,
        "pairs": len(pairs),
        "tokens": sum(lengths),
        "mean_tokens": sum(lengths) / len(lengths),
        "gflop": flops / 1e9,
        "rows": rows,
    }


def mean_spearman(queries: list[str], scores, ref) -> float:
    """Mean over queries of the Spearman correlation of ``scores`` with ``ref`` (fidelity of
    the ranking each query gets)."""
    import numpy as np

    def ranks(x):
        return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)

    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q, []).append(i)
    rhos = []
    for idx in groups.values():
        if len(idx) > 2:
            a, b = ranks(np.asarray(ref)[idx]), ranks(np.asarray(scores)[idx])
            rhos.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(rhos)) if rhos else float("nan")


def print_table(result: dict) -> None:
    print(
        f"\n### {result['model']}: {result['pairs']} pairs, {result['tokens']} tokens "
        f"(mean {result['mean_tokens']:.0f}), {result['gflop']:.0f} GFLOP\n"
    )
    print(
        "| run | best s | pairs/s | tokens/s | x FlagReranker best | MFU | max abs diff "
        "| Spearman | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        ratio = f"{r['vs_flag_best']:.2f}" if r["vs_flag_best"] else "-"
        diff = f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "-"
        load = f"{min(r['load_avg']):.1f}-{max(r['load_avg']):.1f}"
        rho = f"{r['spearman']:.4f}" if r["spearman"] is not None else "-"
        print(
            f"| {r['label']} | {r['best_seconds']:.2f} | {r['pairs_per_s']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {ratio} | {100 * r['mfu']:.1f}% | {diff} | {rho} | {load} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="minilm,base")
    ap.add_argument("--queries", type=int, default=10, help="dev queries for minilm")
    ap.add_argument("--base-queries", type=int, default=1, help="dev queries for base")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--flag-batch-sizes", default="8,16,32,64,128")
    ap.add_argument("--ours", default="torch,onnx,onnx-int8,auto")
    ap.add_argument(
        "--st-backends",
        default="torch,onnx,onnx-int8,openvino,openvino-fp32",
        help="sentence-transformers configurations ('' for none)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="timed runs of each configuration")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (GPU: see README)")
    ap.add_argument(
        "--peak-dtype", default=None, help="matmul peak dtype (default fp32 on CPU, bf16 on CUDA)"
    )
    ap.add_argument("--mixed", type=int, default=2000, help="pairs for v2m3 (20-500 tokens)")
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.flag_batch_sizes = [int(x) for x in args.flag_batch_sizes.split(",") if x]
    args.ours = [x for x in args.ours.split(",") if x]
    args.st_backends = [x for x in args.st_backends.split(",") if x]
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "src"))
    import prepare
    import torch

    peers_py = peers_python()
    info = {
        "machine": cpu_description() if args.device == "cpu" else platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "peers": peer_versions(peers_py),
        "load_avg_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    peak_dtype = args.peak_dtype or ("fp32" if args.device == "cpu" else "bf16")
    peak = matmul_peak(args.device, peak_dtype)
    info["matmul_peak_gflops"] = peak
    info["matmul_peak_dtype"] = peak_dtype
    info["device"] = args.device
    print(
        f"{info['machine']}; {peak_dtype} matmul peak {peak:.0f} GFLOP/s; {info['cpus']} cpus; torch threads "
        f"{info['torch_threads']}; load {info['load_avg_start'][0]:.2f}; peers {info['peers']}"
    )
    results = []
    for name in [m for m in args.models.split(",") if m]:
        model_dir = prepare.build(name, args.cache)
        if name == "v2m3":
            pairs_file = prepare.write_pairs(
                args.cache / f"pairs-mixed{args.mixed}.jsonl",
                prepare.mixed_pairs(model_dir, args.mixed),
            )
        else:
            nq = args.queries if name == "minilm" else args.base_queries
            pairs_file = prepare.write_pairs(
                args.cache / f"pairs-{nq}x{args.candidates}.jsonl",
                prepare.dev_pairs(nq, args.candidates),
            )
        print(f"{name}: {model_dir}, {pairs_file}", file=sys.stderr, flush=True)
        result = bench_model(name, model_dir, pairs_file, args, peers_py, peak)
        results.append(result)
        print_table(result)
    info["load_avg_end"] = os.getloadavg()
    print(f"\nload average at the end: {info['load_avg_end'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
