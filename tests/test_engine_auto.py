"""backend="auto": the candidates and rules on faked CPUs, the choice by measurement on this
machine (fastest faithful candidate, cached, re-measured when the checkpoint changes), and the
chosen backend's scores against exact torch fp32."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from crossrank import Reranker
from crossrank.cpu import BF16_UNITS, cpu_features, int8_scheme
from crossrank.engine.auto import (
    Candidate,
    Timing,
    candidates,
    choose_backend,
    onnx_available,
    openvino_available,
    pick,
)
from crossrank.engine.calibrate import cache_dir, cache_key, calibration_pairs, spearman

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

CPU = torch.device("cpu")
ZEN4 = {"avx2", "avx512", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = {"avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"}
ZEN3 = {"avx2"}
SKYLAKE_X = {"avx2", "avx512"}
ENCODER, DECODER = ("torch", "onnx", "openvino"), ("torch",)


@pytest.mark.parametrize(
    ("backends", "flags", "onnx", "want"),
    [
        (ENCODER, ZEN4, True, ("onnx", "int8", None)),
        (ENCODER, SAPPHIRE_RAPIDS, True, ("onnx", "int8", None)),
        (ENCODER, ZEN4, False, ("torch", None, torch.bfloat16)),  # no onnxruntime: bf16
        (ENCODER, ZEN3, True, ("torch", None, None)),
        (ENCODER, SKYLAKE_X, True, ("torch", None, None)),
        (ENCODER, set(), True, ("torch", None, None)),
        (DECODER, ZEN4, True, ("torch", None, torch.bfloat16)),  # LLMs: no ONNX path
        (DECODER, SKYLAKE_X, True, ("torch", None, None)),
    ],
)
def test_rules_on_faked_cpus(backends, flags, onnx, want):
    """The fallback when measuring is off."""
    choice = choose_backend(
        backends=backends, device=CPU, dtype_given=False, flags=flags, onnx=onnx
    )
    assert (choice.backend, choice.quantize, choice.dtype) == want
    assert choice.reason and choice.source == "rules"


def test_rules_keep_what_the_user_fixed():
    given = choose_backend(backends=ENCODER, device=CPU, dtype_given=True, flags=ZEN4, onnx=True)
    assert (given.backend, given.dtype) == ("torch", None)
    cuda = choose_backend(
        backends=ENCODER, device=torch.device("cuda"), dtype_given=False, flags=ZEN4, onnx=True
    )
    assert (cuda.backend, cuda.quantize) == ("torch", None)


@pytest.mark.parametrize(
    ("backends", "flags", "onnx", "want"),
    [
        (ENCODER, ZEN4, True, ["torch fp32", "torch bf16", "onnx fp32", "onnx int8"]),
        (ENCODER, ZEN3, True, ["torch fp32", "onnx fp32", "onnx int8"]),  # int8 is u8 x u8
        (ENCODER, ZEN4, False, ["torch fp32", "torch bf16"]),
        (DECODER, SAPPHIRE_RAPIDS, True, ["torch fp32", "torch bf16"]),
        (DECODER, ZEN3, True, ["torch fp32"]),
    ],
)
def test_candidates_are_what_the_cpu_runs(backends, flags, onnx, want):
    assert [c.describe() for c in candidates(backends, flags, onnx)] == want


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        (SAPPHIRE_RAPIDS, ["openvino fp32", "openvino bf16"]),
        (ZEN3, ["openvino fp32"]),  # bf16 only where the units are
    ],
)
def test_openvino_is_measured_where_it_is_installed(flags, want):
    cands = [c.describe() for c in candidates(ENCODER, flags, True, openvino=True)]
    assert cands[-len(want) :] == want and "openvino" not in " ".join(cands[: -len(want)])
    assert not [
        c for c in candidates(DECODER, flags, True, openvino=True) if "openvino" in c.backend
    ]


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        (ZEN4, ["torch fp32", "torch bf16", "torch int8"]),
        (ZEN3, ["torch fp32", "torch int8"]),  # int8 products are exact on AVX2 too
    ],
)
def test_decoders_measure_their_int8_products(flags, want):
    cands = candidates(DECODER, flags, True, torch_quantize=("int8",))
    assert [c.describe() for c in cands] == want
    assert (cands[-1].backend, cands[-1].quantize) == ("torch", "int8")


def test_auto_measures_a_decoder_and_a_cpu_without_bf16_units(gemma_dir, tmp_path, monkeypatch):
    """An LLM reranker: auto times fp32, bf16 (where the units are) and the int8 products, and
    picks the fastest faithful one; hiding the bf16 units (CROSSRANK_DISABLE_FEATURES) drops
    the bf16 candidate and measures again (the features are part of the cache key)."""
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    rr = Reranker(gemma_dir, device="cpu", backend="auto")
    want = candidates(DECODER, cpu_features(), True, torch_quantize=("int8",))
    assert [t.candidate for t in rr.backend_choice.timings] == [c.describe() for c in want]
    fastest = max((t for t in rr.backend_choice.timings if t.faithful), key=lambda t: t.pairs_per_s)
    assert rr.backend_choice.describe() in (fastest.candidate, "torch")
    assert rr.options.quantize == rr.backend_choice.quantize

    had_bf16 = bool(BF16_UNITS & cpu_features())
    monkeypatch.setenv("CROSSRANK_DISABLE_FEATURES", "avx512_bf16,amx")
    cpu_features.cache_clear()
    try:
        plain = Reranker(gemma_dir, device="cpu", backend="auto")
        names = [t.candidate for t in plain.backend_choice.timings]
        # hiding units the CPU has is another machine (measured); else the same (cached)
        assert plain.backend_choice.source == ("measured" if had_bf16 else "cache")
        assert names == ["torch fp32", "torch int8"]
    finally:
        monkeypatch.delenv("CROSSRANK_DISABLE_FEATURES")
        cpu_features.cache_clear()


def test_pick_is_the_fastest_faithful_candidate():
    cands = candidates(ENCODER, ZEN4, True)
    timings = [
        Timing("torch fp32", 10.0, 1.0, 0.0, True),
        Timing("torch bf16", 15.0, 0.995, 0.03, True),
        Timing("onnx fp32", 12.0, 1.0, 1e-6, True),
        Timing("onnx int8", 30.0, 0.95, 0.4, False),  # fastest, not faithful
    ]
    choice = pick(timings, cands)
    assert (choice.backend, choice.quantize, choice.dtype) == ("torch", None, torch.bfloat16)
    assert choice.source == "measured" and "1.50x torch fp32" in choice.reason
    # a candidate that could not run is never chosen; fp32 wins when nothing beats it
    broken = [timings[0], Timing("onnx int8", 0.0, 0.0, float("inf"), False, "boom")]
    assert pick(broken, cands).describe() == "torch"


def test_spearman_handles_ties():
    assert spearman(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == 1.0
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == -1.0
    assert spearman(np.array([1.0, 1, 1]), np.array([1.0, 1, 1])) == 1.0
    rho = spearman(np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4]))
    assert 0.9 < rho < 1.0


def test_calibration_pairs_are_distinct_and_realistic():
    pairs, groups = calibration_pairs()
    assert len(pairs) == 48 and sorted(set(groups)) == [0, 1, 2]
    for g in set(groups):
        passages = [p for (_, p), gi in zip(pairs, groups) if gi == g]
        assert len(set(passages)) == len(passages) == 16
    lengths = [len(p.split()) for _, p in pairs]
    assert min(lengths) < 10 and max(lengths) > 60  # summaries up to two descriptions


def test_measured_choice_is_cached_and_shown(bert_dir, tmp_path, monkeypatch, caplog):
    """On a tiny checkpoint: every candidate this CPU runs is timed and checked, the choice is
    the fastest faithful one, the decision is written to the cache with the machine's
    fingerprint, a second load reads it (no measuring), and touching the weights measures
    again (options are part of the key too: ``cache_key`` hashes them beside the files)."""
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="crossrank.engine"):
        rr = Reranker(bert_dir, device="cpu", max_length=64, backend="auto")
    choice = rr.backend_choice
    want = [
        c.describe()
        for c in candidates(ENCODER, cpu_features(), onnx_available(), (), openvino_available())
    ]
    assert [t.candidate for t in choice.timings] == want
    assert choice.source == "measured" and "calibration" in caplog.text
    fastest = max((t for t in choice.timings if t.faithful), key=lambda t: t.pairs_per_s)
    assert Candidate(choice.backend, choice.quantize, choice.dtype).describe() == fastest.candidate
    assert all(t.pairs_per_s > 0 for t in choice.timings)
    assert rr.backend.name == choice.backend

    (record,) = [json.loads(p.read_text()) for p in cache_dir().glob("*.json")]
    assert record["fingerprint"]["features"] == sorted(cpu_features())
    assert record["fingerprint"]["int8_scheme"] == int8_scheme()
    assert record["choice"]["timings"] == [t.as_dict() for t in choice.timings]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crossrank.engine"):
        again = Reranker(bert_dir, device="cpu", max_length=64, backend="auto")
    assert again.backend_choice.source == "cache" and "calibration" not in caplog.text
    assert again.backend_choice.describe() == choice.describe()
    assert again.backend_choice.timings == tuple(Timing(**t.as_dict()) for t in choice.timings)

    weights = next(Path(bert_dir).glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        touched = Reranker(bert_dir, device="cpu", max_length=64, backend="auto")
        assert touched.backend_choice.source == "measured"
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_cache_key_follows_options_and_machine(monkeypatch):
    identity = ["/m", ["config.json", 10, 1]]
    key, fp = cache_key(identity, {"max_length": 64})
    assert cache_key(identity, {"max_length": 64})[0] == key
    assert cache_key(identity, {"max_length": 32})[0] != key
    assert cache_key(["/m", ["config.json", 10, 2]], {"max_length": 64})[0] != key
    monkeypatch.setattr(torch, "get_num_threads", lambda: fp["threads"] + 1)
    assert cache_key(identity, {"max_length": 64})[0] != key  # another thread count


def test_measuring_off_falls_back_on_the_rules(bert_dir, monkeypatch):
    monkeypatch.setenv("CROSSRANK_AUTO_MEASURE", "0")
    rr = Reranker(bert_dir, device="cpu", backend="auto")
    flags, onnx = cpu_features(), onnx_available()
    want = choose_backend(backends=ENCODER, device=CPU, dtype_given=False, flags=flags, onnx=onnx)
    assert rr.backend_choice == want and rr.backend_choice.timings == ()


def test_auto_on_this_machine_keeps_the_ranking():
    """The bundled reranker with backend='auto' here: what it measured is faithful on the
    calibration pairs, and its scores rank the example documents as exact torch fp32 does."""
    example = Path(__file__).parent.parent / "src/crossrank/bundled/example"
    docs = [json.loads(line)["text"] for line in (example / "documents.jsonl").open()]
    queries = [
        (example / "query.txt").read_text().strip(),
        "image editor",
        "text editor for programmers",
    ]
    pairs = [(q, d) for q in queries for d in docs]
    bundled = {"device": "cpu", "max_length": 128}  # the length the bundled model is used at
    exact = np.array(Reranker("crossrank/minilm-debian", **bundled).compute_score(pairs))
    auto = Reranker("crossrank/minilm-debian", backend="auto", **bundled)
    chosen = [t for t in auto.backend_choice.timings if t.pairs_per_s > 0 and t.faithful]
    assert chosen and all(t.spearman >= 0.99 for t in chosen)
    got = np.array(auto.compute_score(pairs))
    n = len(docs)
    rhos = [spearman(exact[i * n : (i + 1) * n], got[i * n : (i + 1) * n]) for i in range(3)]
    for i in range(len(queries)):
        assert np.argmax(exact[i * n : (i + 1) * n]) == np.argmax(got[i * n : (i + 1) * n])
    # 10 documents: one swap of a near tie costs 0.012
    assert np.mean(rhos) >= 0.98, rhos


def test_candidate_describe():
    assert Candidate("onnx", "int8").describe() == "onnx int8"
    assert Candidate("torch", dtype=torch.bfloat16).describe() == "torch bf16"
    assert Candidate("torch").describe() == "torch fp32"


def test_a_layerwise_model_with_several_cutoff_layers_is_measured(
    minicpm_dir, tmp_path, monkeypatch
):
    """Calibration compares the first cutoff layer (what compute_score gives) when the model
    scores several."""
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    rr = Reranker(minicpm_dir, device="cpu", backend="auto", cutoff_layers=[2, 1])
    assert rr.backend_choice.source == "measured" and rr.backend_choice.timings
    assert rr.backend_choice.timings[0].spearman == 1.0
    assert set(rr.compute_layer_scores(["q", "a passage"])) == {2, 1}


def test_backends_command_prints_the_table_and_refuses_a_fixed_backend(
    bert_dir, tmp_path, monkeypatch, capsys
):
    from crossrank.cli import main

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    assert main(["backends", "-m", str(bert_dir), "--device", "cpu", "--max-length", "64"]) == 0
    out = capsys.readouterr().out
    assert "decision:" in out and "torch fp32" in out and "*" in out
    assert main(["backends", "-m", str(bert_dir), "--backend", "onnx"]) == 2
    assert "drop --backend" in capsys.readouterr().err
