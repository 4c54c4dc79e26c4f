"""crossrank.eval.reranking with a real tiny Reranker, and the markdown/PNG report."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossrank.errors import InputError
from crossrank.eval.beir import load_beir
from crossrank.eval.metrics import evaluate
from crossrank.eval.report import EvalResult, format_console, write_markdown
from crossrank.eval.runs import ranked

TINY = Path(__file__).parent / "data" / "tiny-beir"


@pytest.fixture(scope="module")
def reranker(bert_dir):
    from crossrank import Reranker

    return Reranker(bert_dir, max_length=64, show_progress=False)


@pytest.fixture(scope="module")
def first_stage():
    ds = load_beir(TINY, "test")
    run = {
        "q1": {"d1": 5.0, "d2": 4.0, "d12": 3.0, "d5": 2.0, "d6": 1.0},
        "q2": {"d3": 3.0, "d4": 2.0, "d16": 1.0},
        "q3": {},
    }
    return ds, run


def test_rerank_one_batched_call_scores_and_tail(reranker, first_stage):
    from crossrank.eval.reranking import rerank

    ds, run = first_stage
    calls = []
    original = reranker.rank_many

    def spy(queries, documents, **kw):
        calls.append((list(queries), [len(d) for d in documents]))
        return original(queries, documents, **kw)

    reranker.rank_many = spy
    try:
        out = rerank(reranker, ds, run, top_k=3)
    finally:
        del reranker.rank_many
    assert calls == [([ds.queries["q1"], ds.queries["q2"], ds.queries["q3"]], [3, 3, 0])]
    assert set(out) == {"q1", "q2", "q3"} and out["q3"] == {}
    for qid in ("q1", "q2"):
        top = list(run[qid])[:3]
        expected = reranker.compute_score([[ds.queries[qid], ds.corpus[d]] for d in top])
        for doc, score in zip(top, expected):
            assert out[qid][doc] == pytest.approx(score, abs=1e-5)
    order = [d for d, _ in ranked(out["q1"])]
    assert set(order[:3]) == {"d1", "d2", "d12"} and order[3:] == ["d5", "d6"]  # tail kept
    assert out["q1"]["d5"] == pytest.approx(min(out["q1"][d] for d in order[:3]) - 1)
    no_tail = rerank(reranker, ds, run, top_k=3, keep_tail=False, query_ids=["q1"])
    assert list(no_tail) == ["q1"] and set(no_tail["q1"]) == {"d1", "d2", "d12"}


def test_rerank_rejects_unknown_query_and_document(reranker, first_stage):
    from crossrank.eval.reranking import rerank

    ds, _ = first_stage
    with pytest.raises(InputError, match="not in the dataset's queries"):
        rerank(reranker, ds, {"q404": {"d1": 1.0}})
    with pytest.raises(InputError, match="'d404' of query 'q1' is not in the corpus"):
        rerank(reranker, ds, {"q1": {"d404": 1.0}})
    with pytest.raises(InputError, match="top_k"):
        rerank(reranker, ds, {"q1": {"d1": 1.0}}, top_k=0)


def test_report_table_and_png(reranker, first_stage, tmp_path):
    from crossrank.eval.reranking import rerank

    ds, run = first_stage
    reranked = rerank(reranker, ds, run, top_k=5)
    result = EvalResult("tiny", "test", "fixture", 5, evaluate(ds.qrels, run))
    result.models["tiny-bert"] = evaluate(ds.qrels, reranked)
    text = format_console(result)
    assert "3 queries evaluated" in text and "M1 = tiny-bert" in text
    base, new = result.first_stage["nDCG@10"], result.models["tiny-bert"]["nDCG@10"]
    assert f"{new:.4f} ({new - base:+.4f})" in text
    png = write_markdown(result, tmp_path / "report.md", command="crossrank eval ...")
    assert png == tmp_path / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = (tmp_path / "report.md").read_text()
    assert "| nDCG@10 |" in md and "](report.png)" in md
