"""The qwen3 family through every entry point: Reranker (both checkpoint forms, instruction=,
prefix sharing, chunking), the CLI (score, rank, eval) and the server, on tiny checkpoints;
scores against the authors' formula on transformers' Qwen3ForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oracle import authors_scores

QUERIES = ["what is panda?", "Debian operating system"]
DOCS = [
    "The giant panda is a bear species endemic to China.",
    "hi",
    "Debian is a free operating system for your computer. " * 4,
    "pandas eat bamboo and live in the mountains",
    "search engines rank documents; cross-encoders rescore the top hundred candidates " * 2,
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
]
PAIRS = [(q, d) for q in QUERIES for d in DOCS]
TINY_BEIR = Path(__file__).parent / "data" / "tiny-beir"


@pytest.fixture(scope="module")
def reference(qwen3_dir):
    probs, diffs, _ = authors_scores(qwen3_dir, PAIRS, max_length=512)
    return probs.numpy(), diffs.numpy()


def test_reranker_scores_are_the_authors(qwen3_dir, qwen3_seqcls_dir, reference):
    from crossrank import Reranker

    probs, diffs = reference
    rr = Reranker(qwen3_dir)
    assert rr.family.name == "qwen3" and rr.outputs == ("score",)
    logits = np.array(rr.compute_score(PAIRS))
    diff = np.abs(logits - diffs).max()
    print(f"qwen3 Reranker vs authors' formula: logit max abs diff {diff:.2e}")
    assert diffs.std() > 0.3 and diff < 1e-4
    assert np.abs(np.array(rr.compute_score(PAIRS, normalize=True)) - probs).max() < 1e-4
    converted = Reranker(qwen3_seqcls_dir)
    assert converted.family.name == "qwen3"
    assert np.abs(np.array(converted.compute_score(PAIRS)) - diffs).max() < 1e-4
    ranked = rr.rank(QUERIES[0], DOCS)
    assert [r.index for r in ranked] == list(np.argsort(-diffs[: len(DOCS)], kind="stable"))


def test_instruction_per_reranker_and_per_call(qwen3_dir, reference):
    from crossrank import Reranker

    task = "Given a question, find the passage about animals"
    _, want, _ = authors_scores(qwen3_dir, PAIRS, instruction=task, max_length=512)
    per_reranker = np.array(Reranker(qwen3_dir, instruction=task).compute_score(PAIRS))
    rr = Reranker(qwen3_dir)
    per_call = np.array(rr.compute_score(PAIRS, instruction=task))
    assert np.abs(per_reranker - want.numpy()).max() < 1e-4
    assert np.abs(per_call - want.numpy()).max() < 1e-4
    assert np.abs(per_call - reference[1]).max() > 1e-3, "the instruction must change scores"
    # the call's instruction does not stick
    assert np.abs(np.array(rr.compute_score(PAIRS)) - reference[1]).max() < 1e-4
    ranked = rr.rank(QUERIES[0], DOCS, instruction=task)
    assert [r.index for r in ranked] == list(np.argsort(-want.numpy()[: len(DOCS)], kind="stable"))


def test_prefix_sharing_equals_unshared(qwen3_dir, monkeypatch):
    from crossrank import Reranker
    from crossrank.models.qwen3 import Qwen3Reranker

    calls = []
    original = Qwen3Reranker.prefix_cache

    def counting(self, ids, mask, n_layers=None):
        calls.append(ids.shape[0])
        return original(self, ids, mask, n_layers)

    monkeypatch.setattr(Qwen3Reranker, "prefix_cache", counting)
    pairs = PAIRS * 2
    shared = np.array(Reranker(qwen3_dir).compute_score(pairs))
    n_calls = len(calls)
    unshared = np.array(Reranker(qwen3_dir, share_prefix=False).compute_score(pairs))
    assert n_calls > 0 and len(calls) == n_calls  # only the shared path caches prefixes
    assert sum(calls) < len(pairs)  # one prefix per query and batch, not per pair
    diff = np.abs(shared - unshared).max()
    print(f"qwen3 prefix sharing vs unshared max abs diff {diff:.2e}")
    assert diff < 1e-4


def test_long_documents_chunked(qwen3_dir):
    """The first window of a chunked document is the truncated document (same score); more
    windows can only raise a document's score."""
    from crossrank import Reranker

    rr = Reranker(qwen3_dir, max_length=130)  # template 54 + query side ~40: ~36 doc tokens
    long_doc = " ".join(DOCS) * 3
    pairs = [(QUERIES[0], long_doc), (QUERIES[1], long_doc), (QUERIES[0], "hi")]
    plain = np.array(rr.compute_score(pairs))
    one = np.array(rr.compute_score(pairs, max_chunks_per_doc=1, chunk_overlap=4))
    chunked = np.array(rr.compute_score(pairs, max_chunks_per_doc=6, chunk_overlap=4))
    np.testing.assert_allclose(one, plain, atol=1e-5)
    assert (chunked >= plain - 1e-5).all()
    assert (chunked > plain + 1e-4).any(), "a later window must score higher for the test to bite"
    np.testing.assert_allclose(chunked[2], plain[2], atol=1e-5)  # short: one window


def test_options_the_family_does_not_have_are_refused(qwen3_dir):
    from crossrank import Reranker
    from crossrank.errors import CrossrankError, InputError

    with pytest.raises(CrossrankError, match="backend"):
        Reranker(qwen3_dir, backend="onnx")
    with pytest.raises(CrossrankError, match="prompt"):
        Reranker(qwen3_dir, prompt="Is it relevant?")
    with pytest.raises(CrossrankError, match="instruction="):
        Reranker(qwen3_dir, query_max_length=16)
    with pytest.raises(InputError, match="template"):
        Reranker(qwen3_dir).compute_score(PAIRS[:1], max_length=20)


def test_cli_score_and_rank(qwen3_dir, tmp_path, capsys, reference):
    from crossrank.cli import main

    inp = tmp_path / "pairs.jsonl"
    inp.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS))
    out = tmp_path / "scores.jsonl"
    assert main(["score", "-m", str(qwen3_dir), "-i", str(inp), "-o", str(out)]) == 0
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert np.abs(np.array(scores) - reference[1]).max() < 1e-4
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    capsys.readouterr()
    code = main(
        ["rank", "-m", str(qwen3_dir), "-q", QUERIES[0], "-d", str(docs), "--json", "--normalize"]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    probs = reference[0][: len(DOCS)]
    assert [r["index"] for r in rows] == list(np.argsort(-probs, kind="stable"))
    assert np.abs(np.array([r["score"] for r in rows]) - np.sort(probs)[::-1]).max() < 1e-4
    # --instruction: the authors' scores with that instruction
    task = "Given a question, find the passage about animals"
    _, want, _ = authors_scores(qwen3_dir, PAIRS, instruction=task, max_length=512)
    argv = ["score", "-m", str(qwen3_dir), "-i", str(inp), "-o", str(out)]
    assert main([*argv, "--instruction", task]) == 0
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert np.abs(np.array(scores) - want.numpy()).max() < 1e-4
    # an option the family lacks: one line, exit code 2
    assert main(["score", "-m", str(qwen3_dir), "-i", str(inp), "--backend", "onnx"]) == 2
    assert "not supported by the qwen3 family" in capsys.readouterr().err


def test_cli_eval(qwen3_dir, tmp_path, monkeypatch):
    from crossrank.cli import main

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval.json"
    code = main(
        ["eval", "--dataset", str(TINY_BEIR), "--split", "test", "--model", str(qwen3_dir)]
        + ["--first-stage", "bm25", "--top-k", "4", "--max-queries", "3", "--seed", "1"]
        + ["--max-length", "128", "--device", "cpu", "--output", str(out)]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["queries"] == 3 and list(data["models"]) == [str(qwen3_dir)]
    metrics = data["models"][str(qwen3_dir)]
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_server_rerank(qwen3_dir):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from crossrank import Reranker
    from crossrank.reranker import sigmoid
    from crossrank.server.app import create_app
    from crossrank.server.settings import ServerSettings

    rr = Reranker(qwen3_dir, device="cpu")
    want = np.array(rr.compute_score([(QUERIES[0], d) for d in DOCS]))
    with TestClient(create_app(rr, ServerSettings(max_wait_ms=1))) as c:
        for _ in range(500):
            if c.get("/health").status_code == 200:
                break
        body = c.post("/rerank", json={"query": QUERIES[0], "texts": DOCS})
    assert body.status_code == 200
    got = {r["index"]: r["score"] for r in body.json()}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], sigmoid(want), atol=1e-5)
