"""LLM rerankers on the CPU: crossrank's decoder modes vs FlagEmbedding, sentence-transformers
and llama.cpp, one run, same checkpoint and pairs, fidelity and peak memory beside speed.

    PYTHONPATH=src .venv/bin/python benchmarks/llm_cpu.py [--shapes gemma,qwen3,base]
        [--flag-batch-sizes 1,2,4,8,16] [--st-batch-sizes 1,2,4,8] [--llamacpp f16,q8_0,Q4_K_M]
        [--qwen3-pairs 1x20] [--rounds 1] [--json llm.json]

Shapes (random weights, tokenizers trained here on debian-ir; built once under
``benchmarks/.cache/llm``):

* ``gemma``: bge-reranker-v2-gemma's architecture at hidden 512, 6 layers, 8 heads / 1 KV head
  (MQA), FFN 2048; 2 dev queries x 50 BM25 candidates, max length 512. Peers: FlagEmbedding's
  ``FlagLLMReranker`` (fp32, ``--flag-batch-sizes``; the ratio uses its best).
* ``qwen3``: Qwen3-Reranker-0.6B's shape (28 layers, hidden 1024, 16 / 8 heads, head_dim 128,
  FFN 3072, vocabulary 151,669), its template; ``--qwen3-pairs`` (queries x candidates).
  Peers: sentence-transformers' ``CrossEncoder`` (its causal-LM path: ``LogitScore`` head, the
  pair rendered by the checkpoint's chat template) at ``--st-batch-sizes``, and llama.cpp.
* ``base``: bge-reranker-base's shape (``bench.py``'s checkpoint), 2 x 50 pairs; crossrank's
  ONNX fp32 / int8 rows too; peer llama.cpp (the other peers of this shape are in
  ``bench.py``).

crossrank's rows: exact (torch fp32, the default), bf16 (where the CPU has bf16 units), int8
(``quantize="int8"``, decoders), ``auto`` and ``auto`` with the bf16 units hidden
(``CROSSRANK_DISABLE_FEATURES=avx512_bf16,amx`` and ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``:
what a CPU without them gets). llama.cpp: the checkpoint converted by its own converter at
f16 and Q8_0, Q4_K_M by its ``llama-quantize``, served by ``llama-server --reranking``
(:mod:`llamacpp`).

Every run is its own process (``worker.py``, a warm-up pass over all pairs first; llama.cpp:
the server), so peak RSS (VmHWM) is per configuration and includes loading. With ``--rounds N``
the crossrank and FlagEmbedding / sentence-transformers rows all run once, then all again, N
times, and each keeps its fastest run (llama.cpp's rows run once, after them). Fidelity is against crossrank's exact scores
(torch fp32, equal to transformers' within 1e-4 by the parity tests): mean per-query Spearman
and max abs difference on the raw-logit scale (llama.cpp's Qwen3 P(yes) is turned back into
logit(yes) - logit(no)). The CPU is recorded with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "llm"
sys.path.insert(0, str(HERE))

import llamacpp  # noqa: E402
import prepare  # noqa: E402
from bench import cpu_description, peers_python, run_worker  # noqa: E402

#: what "the bf16 units unused" means on a CPU that has them
NO_BF16 = {
    "CROSSRANK_DISABLE_FEATURES": "avx512_bf16,amx",
    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
}


def gemma_checkpoint(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    from crossrank.testing import decoder_tokenizer, random_decoder

    texts = list(prepare.read_corpus().values())[:50000]
    tok = decoder_tokenizer("gemma", texts, 8000, repeat=50)
    shape = dict(
        hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=1,
        intermediate_size=2048, head_dim=64, hidden_act="gelu_pytorch_tanh", rope_theta=10000.0,
    )  # fmt: skip
    return random_decoder("gemma", path, tok, seed=0, std=0.02, **shape)


def qwen3_checkpoint(path: Path) -> Path:
    """Qwen3-Reranker-0.6B's shape with a byte-level BPE that splits text by Qwen2 / Qwen3's
    own regex (as the real tokenizer does, and as llama.cpp's ``qwen2`` pre-tokenizer does);
    the directory name tells llama.cpp's converter it is a Qwen3 reranker (it looks for
    "qwen3-reranker" in the name), and ``chat_template.jinja`` renders a (query, document) pair
    in the reranker's template for sentence-transformers."""
    from families import QWEN3_06B

    from crossrank import testing
    from crossrank.engine.qwen3_tokenize import DEFAULT_INSTRUCTION, PREFIX, SUFFIX
    from crossrank.testing.decoders import SPECS

    if not (path / "config.json").is_file():
        texts = list(prepare.read_corpus().values())[:50000]
        tok = testing.bpe_tokenizer(
            [*texts, *["yes\nno\n"] * 2000], SPECS["qwen3"].specials, 8000,
            must_have=("yes", "no"), qwen_split=True,
        )  # fmt: skip
        testing.qwen3_checkpoint(
            path, tokenizer=tok, std=0.02, norm_std=None, num_hidden_layers=28, **QWEN3_06B
        )
        config = json.loads((path / "config.json").read_text())
        # the real checkpoint's config.json has rope_theta at the top level
        config["rope_theta"] = config["rope_parameters"]["rope_theta"]
        (path / "config.json").write_text(json.dumps(config, indent=2))
    role = 'messages | selectattr("role", "eq", "{}") | map(attribute="content") | first'
    template = (
        f"{PREFIX}<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {{{{ {role.format('query')} }}}}\n"
        f"<Document>: {{{{ {role.format('document')} }}}}{SUFFIX}"
    )
    # Jinja drops one trailing newline of a template: the suffix ends in two
    (path / "chat_template.jinja").write_text(template + "\n")
    return path


def fidelity(ref: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    from crossrank.engine.calibrate import spearman

    rhos = [spearman(ref[groups == g], scores[groups == g]) for g in np.unique(groups)]
    return float(np.mean(rhos)), float(np.abs(ref - scores).max())


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p) - math.log1p(-p)


def bench_shape(name: str, model_dir: Path, rows: list[dict], args, peers_py: Path) -> list[dict]:
    pairs_file = prepare.write_pairs(CACHE / f"pairs-{name}.jsonl", rows)
    qids = [r["qid"] for r in rows]
    groups = np.array([sorted(set(qids)).index(q) for q in qids])
    common = ["--model", str(model_dir), "--pairs", str(pairs_file), "--warmup", "all"]
    common += ["--repeats", str(args.repeats)]
    ours = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    peers = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    py = Path(sys.executable)
    decoder = name != "base"
    plan: list[tuple[str, Path, list[str], dict]] = [
        ("crossrank exact (torch fp32)", py, ["--lib", "crossrank"], ours),
    ]
    if decoder:
        plan += [
            ("crossrank bf16", py, ["--lib", "crossrank", "--dtype", "bf16"], ours),
            ("crossrank int8", py, ["--lib", "crossrank", "--quantize", "int8"], ours),
        ]
    else:  # the encoder's ONNX paths (bench.py has the other peers of this shape)
        plan += [
            ("crossrank onnx fp32", py, ["--lib", "crossrank", "--backend", "onnx"], ours),
            ("crossrank onnx int8", py,
             ["--lib", "crossrank", "--backend", "onnx", "--quantize", "int8"], ours),
        ]  # fmt: skip
    plan.append(("crossrank auto", py, ["--lib", "crossrank", "--backend", "auto"], ours))
    plan.append(
        ("crossrank auto, bf16 units unused", py, ["--lib", "crossrank", "--backend", "auto"],
         dict(ours, **NO_BF16))
    )  # fmt: skip
    if name == "gemma":
        for b in args.flag_batch_sizes:
            plan.append((f"FlagLLMReranker fp32 b{b}", peers_py,
                         ["--lib", "flag-llm", "--batch-size", str(b)], peers))  # fmt: skip
    if name == "qwen3":
        for b in args.st_batch_sizes:
            plan.append((f"sentence-transformers fp32 b{b}", peers_py,
                         ["--lib", "st", "--batch-size", str(b)], peers))  # fmt: skip
    best: dict[str, dict] = {}
    for round_ in range(1, args.rounds + 1):
        for label, python, wargs, env in plan:
            print(f"[{name}] {label} (round {round_}) ...", file=sys.stderr, flush=True)
            r = run_worker(python, [*wargs, *common], env)
            r["label"], r["rounds"] = label, args.rounds
            best[label] = keep_faster(best.get(label), r)
    results = list(best.values())
    ref = np.array(results[0]["scores"])
    if name != "gemma" and args.llamacpp:
        results += bench_llamacpp(name, model_dir, rows, args, peers_py)
    assert ref is not None
    for r in results:
        if "error" in r:
            continue
        scores = np.array(r["scores"])
        r["spearman"], r["max_abs_diff"] = fidelity(ref, scores, groups)
        r["pairs_per_s"] = r["n_pairs"] / min(r["seconds"])
        del r["scores"]
    return results


def keep_faster(kept: dict | None, new: dict) -> dict:
    """Of two runs of one configuration (rounds), the faster; peak RSS the larger of the two
    (the first round's includes ``auto``'s calibration)."""
    if kept is None:
        return new
    if "error" in new:
        return kept
    if "error" in kept:
        return new
    faster = new if min(new["seconds"]) < min(kept["seconds"]) else kept
    faster["peak_rss_mb"] = max(kept["peak_rss_mb"], new["peak_rss_mb"])
    return faster


def bench_llamacpp(
    name: str, model_dir: Path, rows: list[dict], args, peers_py: Path
) -> list[dict]:
    """llama.cpp's configurations for a shape (conversions cached beside the checkpoint)."""
    llamacpp.ensure_built()
    order: dict[str, list[str]] = {}
    for r in rows:
        order.setdefault(r["query"], []).append(r["passage"])
    groups = list(order.items())
    out = []
    f16 = None
    for kind in args.llamacpp:
        gguf = CACHE / f"{name}-{kind.lower()}.gguf"
        print(f"[{name}] llama.cpp {kind} ...", file=sys.stderr, flush=True)
        try:
            if kind.lower() in ("f16", "q8_0"):
                llamacpp.convert(model_dir, gguf, kind.lower(), python=peers_py)
                f16 = gguf if kind.lower() == "f16" else f16
            else:
                f16 = f16 or llamacpp.convert(
                    model_dir, CACHE / f"{name}-f16.gguf", "f16", python=peers_py
                )
                llamacpp.quantize(f16, gguf, kind)
            r = llamacpp.score(gguf, groups, threads=os.cpu_count() or 1)
        except (RuntimeError, OSError) as exc:
            out.append({"label": f"llama.cpp {kind}", "error": str(exc)})
            continue
        if name == "qwen3":  # P(yes) -> logit(yes) - logit(no), crossrank's raw score
            r["scores"] = [logit(p) for p in r["scores"]]
        r.update(label=f"llama.cpp {kind}", n_pairs=len(rows), seconds=[r["seconds"]])
        out.append(r)
    return out


def report(name: str, results: list[dict]) -> None:
    ok = [r for r in results if "error" not in r]
    flag = [r["pairs_per_s"] for r in ok if r["label"].startswith(("FlagLLM", "sentence-t"))]
    lcpp = [r["pairs_per_s"] for r in ok if r["label"].startswith("llama.cpp")]
    peer_name = "FlagLLM" if name == "gemma" else "ST"
    print(f"\n## {name}\n")
    print(f"| configuration | pairs/s | x {peer_name} best | x llama.cpp best | Spearman "
          "| max abs diff | peak RSS MB | chose |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['label']} | failed: {r['error']} | | | | | | |")
            continue
        xf = f"{r['pairs_per_s'] / max(flag):.2f}" if flag else ""
        xl = f"{r['pairs_per_s'] / max(lcpp):.2f}" if lcpp else ""
        chose = r.get("choice") or ""
        print(f"| {r['label']} | {r['pairs_per_s']:.2f} | {xf} | {xl} | {r['spearman']:.4f} "
              f"| {r['max_abs_diff']:.3g} | {r['peak_rss_mb']:.0f} | {chose} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", default="gemma,qwen3,base")
    ap.add_argument("--flag-batch-sizes", default="1,2,4,8,16")
    ap.add_argument("--st-batch-sizes", default="1,2,4,8")
    ap.add_argument("--llamacpp", default="f16,q8_0,Q4_K_M", help="'' for none")
    ap.add_argument("--qwen3-pairs", default="1x20", help="queries x candidates")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per run (best kept)")
    ap.add_argument(
        "--rounds", type=int, default=1,
        help="run every configuration this many times, in turn, and keep each one's fastest "
        "(the machine's speed drifts over minutes: rounds spread every configuration over it)",
    )  # fmt: skip
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.flag_batch_sizes = [int(b) for b in args.flag_batch_sizes.split(",") if b]
    args.st_batch_sizes = [int(b) for b in args.st_batch_sizes.split(",") if b]
    args.llamacpp = [k for k in args.llamacpp.split(",") if k]
    peers_py = peers_python()
    cpu = cpu_description()
    print(f"CPU: {cpu}; {time.strftime('%Y-%m-%d %H:%M')}; load {os.getloadavg()[0]:.2f}")
    record: dict = {"cpu": cpu, "machine": platform.machine(), "shapes": {}}
    if args.llamacpp:
        llamacpp.ensure_built()
        record["llama.cpp"] = llamacpp.version()
    for name in args.shapes.split(","):
        if name == "gemma":
            model_dir, rows = gemma_checkpoint(CACHE / "gemma-512x6"), prepare.dev_pairs(2, 50)
        elif name == "qwen3":
            nq, nc = (int(x) for x in args.qwen3_pairs.split("x"))
            model_dir = qwen3_checkpoint(CACHE / "qwen3-reranker-0.6b-shape")
            rows = prepare.dev_pairs(nq, nc)
        elif name == "base":
            model_dir, rows = prepare.build("base", HERE / ".cache"), prepare.dev_pairs(2, 50)
        else:
            raise SystemExit(f"unknown shape {name}")
        results = bench_shape(name, model_dir, rows, args, peers_py)
        record["shapes"][name] = {"model": str(model_dir), "n_pairs": len(rows), "runs": results}
        report(name, results)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
