"""OpenVINO backend (crossrank.engine.openvino_backend): fp32 scores equal torch's, bf16 keeps
the ranking, the plain export is cached, and the user's mistakes are clear errors."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest

pytest.importorskip("openvino")

from crossrank import Reranker  # noqa: E402
from crossrank.errors import CrossrankError, InputError  # noqa: E402

PAIRS = [
    ["which ports are open", "nmap is a network scanner that finds open ports and services"],
    ["which ports are open", "ok"],
    ["Debian", "Debian is a free operating system for your computer. " * 12],
    ["image editor " * 6, "GIMP edits raster images: layers, masks, filters and plug-ins"],
    ["Texteditor", "Ein Editor für Programmierer mit Syntaxhervorhebung und Makros."],
    ["日本語", "日本語の文章をトークン化します。"],
    ["x", "y"],
]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.isa  # OpenVINO's kernels differ by instruction set: also run under qemu (AVX2)
@pytest.mark.parametrize("fixture", ["bert_dir", "xlmr_dir", "modernbert_dir"])
def test_fp32_matches_torch(fixture, request, own_cache, caplog):
    model_dir = request.getfixturevalue(fixture)
    ref = np.array(Reranker(model_dir, device="cpu").compute_score(PAIRS))
    with caplog.at_level(logging.INFO, logger="crossrank.engine.onnx_cache"):
        # bf16 first: the export it caches is made from the fp32 weights all the same
        bf16 = Reranker(model_dir, device="cpu", backend="openvino", dtype="bf16")
    assert "exporting" in caplog.text and bf16.backend.path.parent.name.endswith("-plain")
    ov = Reranker(model_dir, device="cpu", backend="openvino")
    assert ov.backend.name == "openvino" and ov.model is None
    assert ov.backend.path == bf16.backend.path
    assert ov.backend.path.is_relative_to(own_cache / "onnx")
    got = np.array(ov.compute_score(PAIRS))
    assert ref.std() > 0.05  # the scores spread: the comparison bites
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert abs(ov.compute_score(PAIRS[2])[0] - ref[2]) < 1e-4  # a batch of one
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crossrank.engine.onnx_cache"):
        again = Reranker(model_dir, device="cpu", backend="openvino")
    assert again.backend.path == ov.backend.path and "exporting" not in caplog.text


def test_bf16_keeps_the_ranking():
    """The bundled reranker (real weights): OpenVINO's bf16 (fp32 on a CPU without bf16
    units) keeps the order of its example documents for three queries. Not in the isa set:
    on an AVX2-only CPU this is the fp32 path above, and under qemu it did not finish in 8
    minutes."""
    from crossrank.bundled import EXAMPLE_DIR

    with open(EXAMPLE_DIR / "documents.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line)["text"] for line in fh]
    pairs = [(q, d) for q in ("image editor", "web server", "text editor") for d in docs]
    ref = np.array(Reranker("crossrank/minilm-debian", device="cpu").compute_score(pairs))
    rr = Reranker("crossrank/minilm-debian", device="cpu", backend="openvino", dtype="bf16")
    got = np.array(rr.compute_score(pairs))
    n = len(docs)
    for i in range(3):
        a, b = ref[i * n : (i + 1) * n], got[i * n : (i + 1) * n]
        assert np.argmax(a) == np.argmax(b)
        assert np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] > 0.95
    assert np.abs(got - ref).max() < 0.5


def test_mistakes_are_clear_errors(bert_dir, monkeypatch):
    with pytest.raises(CrossrankError, match="quantize='int8' needs backend='onnx'"):
        Reranker(bert_dir, device="cpu", backend="openvino", quantize="int8")
    with pytest.raises(CrossrankError, match="fp16 is not supported on the CPU"):
        Reranker(bert_dir, device="cpu", backend="openvino", dtype="fp16")
    with pytest.raises(InputError, match="deterministic=True needs backend='torch'"):
        Reranker(bert_dir, device="cpu", backend="openvino", deterministic=True)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"pip install 'crossrank\[openvino\]'"):
        Reranker(bert_dir, device="cpu", backend="openvino")


def test_batch_budget_follows_the_hidden_size(bert_dir):
    from crossrank.engine.runner import openvino_token_budget

    assert [openvino_token_budget(h) for h in (128, 384, 768, 1024)] == [4096, 2048, 1024, 512]
    rr = Reranker(bert_dir, device="cpu", backend="openvino")
    assert rr.scoring.default_max_tokens == openvino_token_budget(rr.config.hidden_size)


def test_a_model_over_2_gb_keeps_its_weights_in_one_file(bert_dir, monkeypatch):
    """Over 2 GB (here: made to look so) the plain export keeps all its weights in one file
    beside the graph, which the cache entry keeps and OpenVINO reads."""
    from crossrank.engine import onnx_export

    monkeypatch.setattr(onnx_export, "is_large", lambda model: True)
    rr = Reranker(bert_dir, device="cpu", backend="openvino")
    entry = rr.backend.path.parent
    assert sorted(p.name for p in entry.iterdir()) == [
        "meta.json",
        "model.onnx",
        "optimized.onnx.data",
    ]
    ref = np.array(Reranker(bert_dir, device="cpu").compute_score(PAIRS))
    np.testing.assert_allclose(rr.compute_score(PAIRS), ref, atol=1e-4, rtol=0)
