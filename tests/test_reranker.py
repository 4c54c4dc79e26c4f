"""Public API behaviour of Reranker."""

from __future__ import annotations

import json
import logging
import shutil
import threading

import numpy as np
import pytest
import torch

from crossrank import RankResult, Reranker
from crossrank.engine.backend import TorchBackend
from crossrank.errors import CrossrankError, InputError, ModelLoadError, UnsupportedModelError
from test_parity import pairs_mix


@pytest.fixture(scope="module")
def rr(xlmr_dir):
    return Reranker(xlmr_dir, device="cpu")


def test_single_pair_and_empty(rr):
    one = rr.compute_score(["what is panda?", "The giant panda is a bear."])
    assert isinstance(one, list) and len(one) == 1 and isinstance(one[0], float)
    assert rr.compute_score([["what is panda?", "The giant panda is a bear."]]) == one
    assert rr.compute_score([]) == []
    assert rr.rank("q", []) == []


def test_order_is_input_order(rr):
    pairs = pairs_mix()
    scores = rr.compute_score(pairs)
    rev = rr.compute_score(pairs[::-1])
    np.testing.assert_allclose(scores, rev[::-1], atol=1e-6)


def test_normalize_is_fp32_sigmoid(rr):
    pairs = pairs_mix()[:4]
    raw = np.array(rr.compute_score(pairs), dtype=np.float32)
    norm = rr.compute_score(pairs, normalize=True)
    expected = torch.sigmoid(torch.tensor(raw)).numpy()
    np.testing.assert_allclose(norm, expected, atol=1e-7)
    assert all(0.0 < s < 1.0 for s in norm)


def test_rank_sorts_best_first_with_top_k_and_documents(rr):
    docs = [p[1] for p in pairs_mix()]
    docs_mixed = [d if i % 2 else {"text": d, "id": i} for i, d in enumerate(docs)]
    scores = rr.compute_score([("what is panda?", d) for d in docs])
    ranked = rr.rank("what is panda?", docs_mixed, top_k=3, return_documents=True)
    assert [r.index for r in ranked] == list(np.argsort(-np.array(scores), kind="stable")[:3])
    assert all(isinstance(r, RankResult) for r in ranked)
    assert ranked[0].document is docs_mixed[ranked[0].index]
    assert [r.score for r in ranked] == sorted([r.score for r in ranked], reverse=True)
    assert rr.rank("what is panda?", docs, top_k=0) == []
    assert rr.rank("what is panda?", docs)[0].document is None


def test_rank_is_stable_on_ties(rr):
    ranked = rr.rank("panda", ["same text"] * 5)
    assert [r.index for r in ranked] == [0, 1, 2, 3, 4]


def test_duplicate_pairs_are_scored_once(rr, monkeypatch):
    """Identical pairs cost one forward row and get exactly the same score."""
    rows = []
    real = rr.engine.backend.score

    def counting(batch):
        rows.append(batch.input_ids.shape[0])
        return real(batch)

    monkeypatch.setattr(rr.engine.backend, "score", counting)
    pairs = [("q", "a doc"), ("q", "another doc"), ("q", "a doc"), ("q", "a doc")] * 3
    scores = rr.compute_score(pairs)
    assert sum(rows) == 2
    assert len({scores[i] for i in (0, 2, 3, 4, 6, 7)}) == 1
    alone = rr.compute_score(["q", "another doc"])
    assert abs(scores[1] - alone[0]) < 1e-5 and scores[1] != scores[0]


def test_rank_many_batches_across_queries(rr):
    queries = ["what is panda?", "debian"]
    docs = [[p[1] for p in pairs_mix()[:5]], ["free operating system", "bamboo"]]
    many = rr.rank_many(queries, docs, top_k=2)
    for q, d, res in zip(queries, docs, many):
        single = rr.rank(q, d, top_k=2)
        assert [r.index for r in res] == [r.index for r in single]
        np.testing.assert_allclose([r.score for r in res], [r.score for r in single], atol=1e-5)
    with pytest.raises(InputError, match="must match"):
        rr.rank_many(["a"], [])


def test_bad_documents(rr):
    with pytest.raises(InputError, match="document 1"):
        rr.rank("q", ["ok", {"title": "no text"}])
    with pytest.raises(InputError, match="top_k"):
        rr.rank("q", ["a"], top_k=-1)


def test_threads_get_the_same_scores(rr):
    pairs = pairs_mix()
    expected = rr.compute_score(pairs)
    results: list[list[float]] = [[] for _ in range(6)]

    def work(i: int) -> None:
        results[i] = rr.compute_score(pairs[i % 3 :] + pairs[: i % 3])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, res in enumerate(results):
        np.testing.assert_allclose(res, expected[i % 3 :] + expected[: i % 3], atol=1e-5)


def test_max_length_is_clamped_with_a_warning(bert_dir, caplog):
    with caplog.at_level(logging.WARNING):
        rr = Reranker(bert_dir, device="cpu", max_length=100_000)
    assert rr.max_length == 128  # the tiny BERT's position table
    assert "exceeds" in caplog.text
    long = [("q " * 500, "p " * 500)]
    assert len(rr.compute_score(long, max_length=10_000)) == 1


@pytest.mark.isa
def test_dtype_and_device_rules(bert_dir):
    with pytest.raises(CrossrankError, match="fp16 is not supported on the CPU"):
        Reranker(bert_dir, device="cpu", dtype="fp16")
    with pytest.raises(CrossrankError, match="unknown dtype"):
        Reranker(bert_dir, device="cpu", dtype="int3")
    bf16 = Reranker(bert_dir, device="cpu", dtype="bf16")
    fp32 = Reranker(bert_dir, device="cpu")
    pairs = pairs_mix()[:4]
    assert bf16.model.encoder.layers[0].qkv.weight.dtype == torch.bfloat16
    np.testing.assert_allclose(bf16.compute_score(pairs), fp32.compute_score(pairs), atol=0.1)


class _OomBelow:
    """A backend wrapper that fails like CUDA does when a batch holds more than ``limit`` pairs."""

    name = "oom-test"
    n_outputs = 1

    def __init__(self, inner: TorchBackend, limit: int) -> None:
        self.inner, self.limit, self.device = inner, limit, inner.device
        self.model = inner.model
        self.sizes: list[int] = []

    def workers_for(self, n_pairs, n_batches):
        return 1

    def score(self, batch):
        self.sizes.append(batch.shape[0])
        if batch.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.score(batch)


def test_out_of_memory_shrinks_the_batch_and_retries(xlmr_dir):
    rr = Reranker(xlmr_dir, device="cpu")
    pairs = pairs_mix() * 3
    expected = rr.compute_score(pairs)
    rr.engine.backend = _OomBelow(rr.backend, limit=4)
    np.testing.assert_allclose(rr.compute_score(pairs), expected, atol=1e-5)
    assert max(rr.engine.backend.sizes) > 4 and rr.engine.max_tokens < 8192


def test_load_errors(tmp_path, bert_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Reranker(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        Reranker(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(bert_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["T5ForConditionalGeneration"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="BertForSequenceClassification"):
        Reranker(bad)
    noweights = tmp_path / "noweights"
    shutil.copytree(bert_dir, noweights)
    (noweights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        Reranker(noweights)


def test_hub_id_offline_gives_one_clear_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ModelLoadError, match="neither a local directory nor in the Hugging Face cache"
    ):
        Reranker("BAAI/bge-reranker-v2-m3")


def test_pytorch_model_bin_checkpoints_load(tmp_path, bert_dir):
    from safetensors.torch import load_file

    d = tmp_path / "bin"
    shutil.copytree(bert_dir, d)
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    pairs = pairs_mix()[:3]
    np.testing.assert_allclose(
        Reranker(d).compute_score(pairs), Reranker(bert_dir).compute_score(pairs), atol=1e-6
    )


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import crossrank, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pairs_in_every_shape_users_pass(rr):
    """Generators, tuples, 2-D numpy arrays of strings and DataFrame-like objects (.values)."""
    pairs = [("what is panda?", "a bear"), ("what is panda?", "hi"), ("q", "passage three")]
    want = rr.compute_score(pairs)

    class FrameLike:  # what pandas gives: a .values 2-D array
        values = np.array(pairs, dtype=object)

    for shaped in (
        (p for p in pairs),
        tuple(pairs),
        [list(p) for p in pairs],
        np.array(pairs),
        FrameLike(),
    ):
        np.testing.assert_allclose(rr.compute_score(shaped), want, atol=1e-6)
    assert rr.compute_score(np.array(pairs[0])) == pytest.approx(want[:1], abs=1e-6)
    assert rr.compute_score(iter([])) == []


def test_user_mistakes_are_clear_input_errors(rr, bert_dir):
    from crossrank.errors import CrossrankError, InputError

    mistakes = [
        (lambda: rr.rank("q", "abc"), "single string"),
        (lambda: rr.compute_score("q"), "single string"),
        (lambda: rr.compute_score(np.array([["a", "b", "c"]])), r"shape \[n, 2\]"),
        (lambda: rr.compute_score([("q", 3)]), "two strings"),
        (lambda: rr.compute_score([("q", "p")], batch_size=-1), "batch_size"),
        (lambda: rr.compute_score([("q", "p")], batch_size=0), "batch_size"),
        (lambda: rr.compute_score([("q", "p")], max_length=0), "max_length"),
        (lambda: rr.compute_score([("q", "p")], max_chunks_per_doc=0), "max_chunks_per_doc"),
        (lambda: rr.compute_score([("q", "p")], chunk_overlap=-1), "chunk_overlap"),
        (lambda: rr.compute_score([("q", "bad \ud800 text")]), "not valid Unicode"),
        (lambda: rr.rank("q", ["a"], top_k=-1), "top_k"),
        (lambda: rr.rank("q", ["a"], top_k=1.5), "top_k"),
        (lambda: rr.compute_score([("q", "p")], prompt="x"), "prompt"),
    ]
    for call, message in mistakes:
        with pytest.raises(InputError, match=message):
            call()
    for kwargs, message in (
        ({"query_max_length": -1}, "query_max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_batch_tokens": -5}, "max_batch_tokens"),
        ({"prompt": "Yes or No?"}, "prompt='Yes or No\\?': not supported by the encoder"),
    ):
        with pytest.raises(CrossrankError, match=message):
            Reranker(bert_dir, **kwargs)


@pytest.mark.parametrize(
    "pairs,message",
    [
        (["q", None], "pair 0: the passage is None, not a string"),
        ([None, "p"], "pair 0: the query is None, not a string"),
        ([("q", "p"), ("q", None)], "pair 1: the passage is None, not a string"),
        ([("q", "p"), [3, "p"]], r"pair 1: the query is an int \(3\), not a string"),
        ([("q", "p"), "x"], r"pair 1 is not a \[query, passage\] pair: 'x'"),
    ],
)
def test_a_bad_pair_says_what_is_wrong(rr, pairs, message):
    from crossrank.errors import InputError

    with pytest.raises(InputError, match=message):
        rr.compute_score(pairs)
