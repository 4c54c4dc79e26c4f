"""llama.cpp as a benchmark peer: convert a checkpoint to GGUF with llama.cpp's own converter,
quantize it with its ``llama-quantize``, and score pairs through ``llama-server --reranking``.

The sources and the build are those of ``scripts/llamacpp-verify.sh build`` (PyPI's
llama-cpp-python source package, vendored llama.cpp, ``GGML_NATIVE=ON``) under
``build/llamacpp``; ``llm_cpu.py --llamacpp-build`` runs that stage when the binaries are
missing. Everything here is the peer's own tooling; two converter inputs are adjusted, both
recorded in docs/notes/llm-cpu.md:

* the converter names BPE pre-tokenizers by a hash of its test string's tokens, and our
  tokenizers are trained here on debian-ir (the real ones cannot be downloaded), so their hash
  is unknown to it; the Qwen3 shape's tokenizer splits text by Qwen2 / Qwen3's own regex, so
  the converter is told ``qwen2`` (checked: llama-server's ``/tokenize`` gives the same ids as
  the tokenizer's own library on the benchmark pairs);
* the XLM-R converter reads ``precompiled_charsmap`` from a SentencePiece normalizer; ours is
  NFKC without one, so the copy it converts gets an empty map (ASCII debian-ir text is
  unchanged by NFKC), and ``add_prefix_space`` (the word-start marker our Metaspace
  pre-tokenizer prepends) from the tokenizer's config.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "llamacpp"


def source_dir() -> Path:
    found = sorted(BUILD.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not found:
        raise FileNotFoundError(f"no llama.cpp sources under {BUILD}: run llamacpp-verify.sh build")
    return found[-1]


def binary(name: str) -> Path:
    for p in (BUILD / "bin" / name, BUILD / "cmake" / "bin" / name):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{name} not built under {BUILD}")


def ensure_built() -> None:
    """Build llama-server and llama-quantize (scripts/llamacpp-verify.sh's build stage)."""
    try:
        binary("llama-server"), binary("llama-quantize")
    except FileNotFoundError:
        subprocess.run([str(ROOT / "scripts" / "llamacpp-verify.sh"), "build"], check=True)


def version() -> str:
    out = subprocess.run([str(binary("llama-server")), "--version"], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return next((ln for ln in lines if ln.startswith("version")), lines[-1] if lines else "?")


def _converter_input(model_dir: Path, work: Path) -> Path:
    """The directory the converter reads: the checkpoint itself, or a copy with the
    adjustments of the module docstring (files linked, not copied, where unchanged)."""
    raw = json.loads((model_dir / "config.json").read_text())
    arch = (raw.get("architectures") or [""])[0]
    if not arch.startswith("XLMRoberta"):
        return model_dir
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    if (tok.get("normalizer") or {}).get("precompiled_charsmap") is not None:
        return model_dir
    dest = work / f"{model_dir.name}-charsmap"
    dest.mkdir(parents=True, exist_ok=True)
    rewritten = ("tokenizer.json", "tokenizer_config.json")
    for f in model_dir.iterdir():
        if f.name not in rewritten and not (dest / f.name).exists():
            os.symlink(f.resolve(), dest / f.name)
    tok["normalizer"] = dict(tok.get("normalizer") or {"type": "NFKC"}, precompiled_charsmap="")
    (dest / "tokenizer.json").write_text(json.dumps(tok))
    # the word-start marker the Metaspace pre-tokenizer prepends (a SentencePiece model's
    # add_dummy_prefix), which the converter reads from the tokenizer's add_prefix_space
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["add_prefix_space"] = True
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    return dest


_PATCH = """
import sys, runpy
sys.path.insert(0, {gguf!r})
sys.path.insert(0, {src!r})
import conversion.base as base
_orig = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError:
        return {pre!r}
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [{conv!r}] + sys.argv[1:]
runpy.run_path({conv!r}, run_name="__main__")
"""


def convert(model_dir: Path, out: Path, outtype: str, *, python: Path, pre: str = "qwen2") -> Path:
    """``model_dir`` -> GGUF at ``outtype`` (f16 / q8_0) by llama.cpp's converter (cached),
    run by ``python`` (the peers' environment: torch, transformers, sentencepiece)."""
    if out.is_file():
        return out
    src = source_dir()
    target = _converter_input(model_dir, out.parent)
    code = _PATCH.format(
        gguf=str(src / "gguf-py"), src=str(src), pre=pre, conv=str(src / "convert_hf_to_gguf.py")
    )
    tmp = out.with_name(out.name + ".tmp")
    log = out.with_suffix(".convert.log")
    with open(log, "w") as fh:
        proc = subprocess.run(
            [str(python), "-c", code, str(target), "--outtype", outtype, "--outfile", str(tmp)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed for {model_dir} ({outtype}): see {log}")
    tmp.replace(out)
    return out


def quantize(f16: Path, out: Path, kind: str = "Q4_K_M") -> Path:
    """``llama-quantize f16 out kind`` (cached)."""
    if out.is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    log = out.with_suffix(".quantize.log")
    with open(log, "w") as fh:
        cmd = [str(binary("llama-quantize")), str(f16), str(tmp), kind]
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-quantize {kind} failed: see {log}")
    tmp.replace(out)
    return out


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=3600) as resp:
        return json.loads(resp.read())


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def score(
    gguf: Path, groups: list[tuple[str, list[str]]], *, threads: int = 2, parallel: int = 4
) -> dict:
    """Serve ``gguf`` with ``llama-server --reranking`` and rerank each ``(query, documents)``
    group in one ``/v1/rerank`` request (the server batches a request's documents over its
    ``parallel`` slots). Returns seconds (the timed pass, after a warm-up request), the scores in
    input order (the server's ``relevance_score``) and the server's peak RSS."""
    from serving import free_port, started

    port = free_port()
    ctx = 1024 * parallel
    cmd = [
        str(binary("llama-server")), "-m", str(gguf), "--reranking", "--host", "127.0.0.1",
        "--port", str(port), "-t", str(threads), "-tb", str(threads), "-c", str(ctx),
        "-b", str(ctx), "-ub", str(ctx), "-np", str(parallel), "--no-warmup",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with started(cmd, base, log=gguf.with_suffix(".server.log")) as proc:
        q0, docs0 = groups[0]
        _post(f"{base}/v1/rerank", {"query": q0, "documents": docs0[:8], "top_n": 8})  # warm-up
        t0 = time.perf_counter()
        answers = [
            _post(f"{base}/v1/rerank", {"query": q, "documents": d, "top_n": len(d)})
            for q, d in groups
        ]
        seconds = time.perf_counter() - t0
        scores: list[float] = []
        for (_, docs), ans in zip(groups, answers):
            by_index = {r["index"]: r["relevance_score"] for r in ans["results"]}
            scores += [float(by_index[i]) for i in range(len(docs))]
        return {"seconds": seconds, "scores": scores, "peak_rss_mb": _peak_rss_mb(proc.pid)}
