"""The modernbert family through every entry point: Reranker (scores against transformers'
tokenizer with ``truncation=True`` and ModernBertForSequenceClassification), chunking, the CLI
(score, rank, eval) and the server, on tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_parity import pairs_mix

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

TINY_BEIR = Path(__file__).parent / "data" / "tiny-beir"
QUERY = "what is panda?"
DOCS = [
    "The giant panda is a bear species endemic to China.",
    "hi",
    "Debian is a free operating system for your computer. " * 4,
    "pandas eat bamboo and live in the mountains",
    "search engines rank documents; cross-encoders rescore the top hundred candidates",
]


def hf_tokenizer(model_dir):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"),
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )


def reference_scores(model_dir, pairs, max_length):
    """The model card's recipe: ``tokenizer(pairs, padding=True, truncation=True,
    max_length=...)`` then ModernBertForSequenceClassification's logits."""
    from transformers import ModernBertForSequenceClassification

    tok = hf_tokenizer(model_dir)
    model = ModernBertForSequenceClassification.from_pretrained(str(model_dir)).eval()
    enc = tok(
        [q for q, _ in pairs],
        [p for _, p in pairs],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return logits[:, 0].numpy()


@pytest.mark.parametrize("max_length", [40, 47, 128])
def test_longest_first_ids_are_the_tokenizers(modernbert_dir, max_length):
    from crossrank.engine.longest_first import LongestFirstPairTokenizer
    from crossrank.engine.tokenize import load_tokenizer

    pairs = pairs_mix()
    pt = LongestFirstPairTokenizer(load_tokenizer(modernbert_dir), max_length=max_length)
    ref = hf_tokenizer(modernbert_dir)(
        [q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_length
    )["input_ids"]
    assert [list(e.ids) for e in pt.encode(pairs)] == ref


@pytest.mark.parametrize("fixture", ["modernbert_dir", "modernbert_mean_dir"])
@pytest.mark.parametrize("max_length", [512, 48])
def test_reranker_scores_match_transformers(request, fixture, max_length):
    from crossrank import Reranker

    model_dir = request.getfixturevalue(fixture)
    rr = Reranker(model_dir, device="cpu", max_length=max_length)
    assert rr.family.name == "modernbert"
    pairs = pairs_mix()
    ours = np.array(rr.compute_score(pairs))
    ref = reference_scores(model_dir, pairs, rr.max_length)
    diff = np.abs(ours - ref).max()
    print(f"{fixture} max_length={max_length}: Reranker vs transformers max abs diff {diff:.2e}")
    assert np.std(ref) > 1e-2 and diff < 1e-4


def test_chunking_and_refused_options(modernbert_dir):
    from crossrank import Reranker
    from crossrank.errors import CrossrankError

    rr = Reranker(modernbert_dir, max_length=40)
    long_doc = " ".join(DOCS) * 2
    pairs = [(QUERY, long_doc), (QUERY, "hi")]
    plain = np.array(rr.compute_score(pairs))
    chunked = np.array(rr.compute_score(pairs, max_chunks_per_doc=8, chunk_overlap=4))
    assert (chunked >= plain - 1e-5).all() and (chunked > plain + 1e-4).any()
    np.testing.assert_allclose(chunked[1], plain[1], atol=1e-5)
    with pytest.raises(CrossrankError, match="prompt"):
        Reranker(modernbert_dir, prompt="Relevant?")
    with pytest.raises(CrossrankError, match="instruction"):
        Reranker(modernbert_dir, instruction="Find it")


@pytest.mark.parametrize("fixture", ["modernbert_dir", "modernbert_mean_dir"])
def test_onnx_backend(request, fixture, tmp_path, monkeypatch):
    """fp32 ONNX gives the torch scores (inputs longer than the window, padding, both
    poolings); int8 quantizes the layers' products and keeps the head in fp32."""
    pytest.importorskip("onnxruntime")
    import onnx

    from crossrank import Reranker

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    model_dir = request.getfixturevalue(fixture)
    pairs = pairs_mix() + [(QUERY, d) for d in DOCS]
    ref = np.array(Reranker(model_dir, max_length=128).compute_score(pairs))
    rr = Reranker(model_dir, max_length=128, backend="onnx")
    assert rr.backend.name == "onnx" and rr.model is None
    got = np.array(rr.compute_score(pairs))
    diff = np.abs(got - ref).max()
    print(f"{fixture}: ONNX fp32 vs torch max abs diff {diff:.2e}")
    assert ref.std() > 0.1 and diff < 1e-4
    assert abs(rr.compute_score(pairs[2])[0] - ref[2]) < 1e-4  # a batch of one
    q = Reranker(model_dir, max_length=128, backend="onnx", quantize="int8")
    scores = np.array(q.compute_score(pairs))
    nodes = onnx.load(str(q.backend.path)).graph.node
    quantized = [n.name for n in nodes if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert quantized and not any(n.startswith("/head/") for n in quantized)
    assert np.abs(scores - ref).max() > 0  # quantization really happened
    assert np.corrcoef(scores, ref)[0, 1] > 0.95


def test_cli_score_rank_eval(modernbert_dir, tmp_path, capsys, monkeypatch):
    from crossrank import Reranker
    from crossrank.cli import main

    expected = np.array(Reranker(modernbert_dir).compute_score([(QUERY, d) for d in DOCS]))
    inp = tmp_path / "pairs.jsonl"
    inp.write_text("".join(json.dumps({"query": QUERY, "passage": d}) + "\n" for d in DOCS))
    out = tmp_path / "scores.jsonl"
    assert main(["score", "-m", str(modernbert_dir), "-i", str(inp), "-o", str(out)]) == 0
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    capsys.readouterr()
    assert main(["rank", "-m", str(modernbert_dir), "-q", QUERY, "-d", str(docs), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in rows] == list(np.argsort(-expected, kind="stable"))
    assert main(["score", "-m", str(modernbert_dir), "-i", str(inp), "--prompt", "Relevant?"]) == 2
    assert "not supported by the modernbert family" in capsys.readouterr().err

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    report = tmp_path / "eval.json"
    code = main(
        ["eval", "--dataset", str(TINY_BEIR), "--split", "test", "--model", str(modernbert_dir)]
        + ["--first-stage", "bm25", "--top-k", "4", "--max-queries", "3", "--seed", "1"]
        + ["--max-length", "64", "--device", "cpu", "--output", str(report)]
    )
    assert code == 0
    data = json.loads(report.read_text())
    assert data["queries"] == 3 and list(data["models"]) == [str(modernbert_dir)]


def test_server_rerank(modernbert_dir):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from crossrank import Reranker
    from crossrank.server.app import create_app
    from crossrank.server.settings import ServerSettings

    rr = Reranker(modernbert_dir, device="cpu")
    want = np.array(rr.compute_score([(QUERY, d) for d in DOCS]))
    with TestClient(create_app(rr, ServerSettings(max_wait_ms=1))) as c:
        for _ in range(500):
            if c.get("/health").status_code == 200:
                break
        body = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert body.status_code == 200
    got = {r["index"]: r["score"] for r in body.json()}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], want, atol=1e-5)


def test_device_pool_spreads_a_big_job(modernbert_dir):
    """devices=[...] gives a pool of ModernBERT replicas; scores equal one device's."""
    from crossrank import Reranker
    from crossrank.engine.pool import DevicePool

    pairs = [(f"{QUERY} {i}", d) for i in range(30) for d in DOCS]  # distinct: no dedup
    ref = np.array(Reranker(modernbert_dir, device="cpu").compute_score(pairs))
    rr = Reranker(modernbert_dir, devices=["cpu", "cpu"], max_batch_tokens=64)
    assert isinstance(rr.backend, DevicePool)
    rr.backend.min_pairs = 50
    got = np.array(rr.compute_score(pairs))
    assert len(rr.backend.replicas) == 2
    np.testing.assert_allclose(got, ref, atol=1e-5)
