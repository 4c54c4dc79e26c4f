"""crossrank.eval.metrics against pytrec_eval itself, on small inline TREC fixtures."""

from __future__ import annotations

import math

import pytest

pytrec_eval = pytest.importorskip("pytrec_eval")

from crossrank.eval.metrics import MEASURES, evaluate  # noqa: E402
from crossrank.eval.runs import ranked, read_run  # noqa: E402

# graded relevance (q1), ties in scores (q1 d3/d4/d5, q2), unjudged documents (dX),
# a query listed with relevant documents but no candidates (q4, absent from the run),
# a query whose judgments hold no relevant document (q5), a run query without qrels (q9)
QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1, "d9": 3},
    "q2": {"d1": 1, "d7": 1},
    "q3": {"d3": 1},
    "q4": {"d1": 1},
    "q5": {"d1": 0, "d2": 0},
    "q6": {"d12": 1},  # first relevant document at rank 12: RR@10 must be 0
}
RUN_TEXT = """\
q1 Q0 dX 1 9.0 t
q1 Q0 d2 2 8.0 t
q1 Q0 d3 3 7.0 t
q1 Q0 d4 4 7.0 t
q1 Q0 d5 5 7.0 t
q1 Q0 d1 6 5.5 t
q1 Q0 d6 7 5.0 t
q1 Q0 d8 8 4.0 t
q1 Q0 d10 9 3.0 t
q1 Q0 d11 10 2.0 t
q1 Q0 d9 11 1.0 t
q2 Q0 d7 1 1.0 t
q2 Q0 d1 2 1.0 t
q2 Q0 dY 3 1.0 t
q3 Q0 dZ 1 3.0 t
q5 Q0 d1 1 2.0 t
q9 Q0 d1 1 2.0 t
""" + "".join(f"q6 Q0 d{i} {i} {20 - i}.0 t\n" for i in range(1, 14))

PYTREC = {
    "nDCG@10": "ndcg_cut_10",
    "R@10": "recall_10",
    "R@100": "recall_100",
    "AP@100": "map_cut_100",
}


@pytest.fixture()
def run(tmp_path):
    path = tmp_path / "fixture.run"
    path.write_text(RUN_TEXT)
    return read_run(path)


def pytrec_reference(qrels, run):
    """Per-query values straight from pytrec_eval (RR@10 = recip_rank of the top-10 run)."""
    judged = {q: d for q, d in qrels.items() if any(r > 0 for r in d.values())}
    ev = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.10,100", "map_cut.100"})
    res = ev.evaluate({q: d for q, d in run.items() if q in judged})
    top10 = {q: dict(ranked(d)[:10]) for q, d in run.items() if q in judged}
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    out = {}
    for q, vals in res.items():
        out[q] = {name: vals[key] for name, key in PYTREC.items()}
        out[q]["RR@10"] = rr[q]["recip_rank"]
    return out


def test_matches_pytrec_eval_per_query_and_mean(run):
    ev = evaluate(QRELS, run)
    ref = pytrec_reference(QRELS, run)
    assert set(ev.per_query) == set(ref) == {"q1", "q2", "q3", "q6"}
    for q in ref:
        for name in MEASURES:
            assert ev.per_query[q][name] == pytest.approx(ref[q][name], abs=1e-12), (q, name)
    for name in MEASURES:
        mean = sum(ref[q][name] for q in ref) / len(ref)
        assert ev[name] == pytest.approx(mean, abs=1e-12)
    assert list(ev) == list(MEASURES)
    assert ev.queries == 4
    assert ev.skipped_no_relevant == 1  # q5
    assert ev.not_in_run == 1  # q4


def test_hand_computed_values(run):
    ev = evaluate(QRELS, run)
    q1 = ev.per_query["q1"]
    # trec_eval order of q1: dX, d2, d5, d4, d3 (ties: doc id descending), d1, d6, d8, d10, d11
    gains = [0, 1, 0, 1, 0, 2, 0, 0, 0, 0]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = [3, 2, 1, 1]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    assert q1["nDCG@10"] == pytest.approx(dcg / idcg)
    assert q1["RR@10"] == pytest.approx(1 / 2)
    assert q1["R@10"] == pytest.approx(3 / 4)
    assert q1["R@100"] == pytest.approx(4 / 4)
    assert q1["AP@100"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 6 + 4 / 11) / 4)
    # q2: three tied documents, trec_eval puts dY, d7, d1 (doc id descending)
    assert ev.per_query["q2"]["RR@10"] == pytest.approx(1 / 2)
    assert ev.per_query["q3"] == dict.fromkeys(MEASURES, 0.0)  # only an unjudged doc
    q6 = ev.per_query["q6"]  # relevant at rank 12: outside every @10, inside @100
    assert (q6["RR@10"], q6["nDCG@10"], q6["R@10"]) == (0.0, 0.0, 0.0)
    assert q6["R@100"] == 1.0 and q6["AP@100"] == pytest.approx(1 / 12)


def test_query_with_empty_candidates_counts_as_zero(run):
    with_empty = {**run, "q4": {}}
    ev = evaluate(QRELS, with_empty)
    assert ev.queries == 5 and ev.not_in_run == 0
    assert ev.per_query["q4"] == dict.fromkeys(MEASURES, 0.0)
    base = evaluate(QRELS, run)
    assert ev["nDCG@10"] == pytest.approx(base["nDCG@10"] * 4 / 5)


def test_is_a_dict_and_empty_run():
    ev = evaluate(QRELS, {"q9": {"d1": 1.0}})
    assert isinstance(ev, dict) and ev.queries == 0
    assert ev == dict.fromkeys(MEASURES, 0.0)
    assert set(evaluate(QRELS, {"q3": {"d3": 1.0}}, measures=["P@1"])) == {"P@1"}
