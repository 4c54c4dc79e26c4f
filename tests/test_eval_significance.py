"""Paired comparisons of evaluated runs: scipy's ttest_rel is the oracle for t and p."""

from __future__ import annotations

import json
import math
import random

import pytest
from scipy.stats import ttest_rel

from crossrank.eval.metrics import Evaluation, evaluate
from crossrank.eval.report import EvalResult, format_console
from crossrank.eval.significance import compare


def evaluation(values: dict[str, float], measure: str = "nDCG@10") -> Evaluation:
    ev = Evaluation({measure: sum(values.values()) / max(len(values), 1)})
    ev.per_query = {q: {measure: v} for q, v in values.items()}
    ev.queries = len(values)
    return ev


@pytest.mark.parametrize("n", [2, 5, 200])
def test_t_and_p_equal_scipy_ttest_rel(n):
    rng = random.Random(n)
    base = {f"q{i}": rng.random() for i in range(n)}
    run = {q: min(1.0, max(0.0, v + rng.gauss(0.02, 0.1))) for q, v in base.items()}
    c = compare(evaluation(run), evaluation(base))
    qs = list(base)
    ref = ttest_rel([run[q] for q in qs], [base[q] for q in qs])
    assert c.queries == n
    assert c.delta == pytest.approx(sum(run[q] - base[q] for q in qs) / n, abs=1e-15)
    assert c.t == pytest.approx(float(ref.statistic), rel=1e-10)
    assert c.p_value == pytest.approx(float(ref.pvalue), rel=1e-8)
    assert c.stderr == pytest.approx(c.delta / c.t, rel=1e-10)
    assert c.better + c.worse + c.unchanged == n


def test_hand_computed_counts_and_only_common_queries():
    base = evaluation({"q1": 0.4, "q2": 0.7, "q3": 0.0, "q4": 1.0})
    run = evaluation({"q1": 0.5, "q2": 0.7, "q3": 0.2, "q5": 0.0})  # q4, q5: one side only
    c = compare(run, base, model="m", baseline_name="b")
    # differences 0.1, 0, 0.2: mean 0.1, sd 0.1, se 0.1 / sqrt(3); t = sqrt(3) on 2 df
    assert (c.model, c.baseline, c.queries) == ("m", "b", 3)
    assert (c.better, c.worse, c.unchanged) == (2, 0, 1)
    assert c.delta == pytest.approx(0.1)
    assert c.stderr == pytest.approx(0.1 / math.sqrt(3))
    assert c.t == pytest.approx(math.sqrt(3))
    # Student's t with 2 df: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2
    assert c.p_value == pytest.approx(1 - math.sqrt(3) / math.sqrt(5))
    assert c.describe() == "+0.1000 ± 0.0577  t 1.73  p 0.2254  better 2 / worse 0 / unchanged 1"


def test_degenerate_differences():
    same = compare(evaluation({"a": 0.3, "b": 0.5}), evaluation({"a": 0.3, "b": 0.5}))
    assert (same.delta, same.stderr, same.t, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = compare(evaluation({"a": 0.5, "b": 0.75}), evaluation({"a": 0.25, "b": 0.5}))
    assert shifted.t == math.inf and shifted.p_value == 0.0
    assert json.loads(json.dumps(shifted.to_json()))["t"] == "inf"  # valid JSON, no Infinity
    down = compare(evaluation({"a": 0.25, "b": 0.5}), evaluation({"a": 0.5, "b": 0.75}))
    assert down.to_json()["t"] == "-inf" and down.worse == 2
    one = compare(evaluation({"a": 1.0}), evaluation({"a": 0.0}))
    assert (one.delta, one.stderr, one.t, one.p_value) == (1.0, None, None, None)
    assert "no test" in one.describe()
    none = compare(evaluation({"a": 1.0}), evaluation({"b": 0.0}))
    assert (none.queries, none.delta, none.p_value) == (0, 0.0, None)


def test_eval_result_compares_models_to_first_stage_then_to_m1():
    qrels = {f"q{i}": {"d1": 1} for i in range(6)}
    first = {q: {"d1": 0.1, "d2": 0.9, "d3": 0.5} for q in qrels}  # the relevant one third
    m1 = {q: {"d1": 0.6, "d2": 0.9, "d3": 0.5} for q in qrels}  # second
    m2 = {
        q: ({"d1": 1.0, "d2": 0.5, "d3": 0.2} if i % 2 else first[q]) for i, q in enumerate(qrels)
    }
    result = EvalResult("tiny", "test", "bm25", 3, evaluate(qrels, first))
    result.models = {"a": evaluate(qrels, m1), "b": evaluate(qrels, m2)}
    cs = result.comparisons()
    assert [(c.model, c.baseline) for c in cs] == [("a", "bm25"), ("b", "bm25"), ("b", "a")]
    # nDCG@10 of rank 1, 2, 3: 1, 1/log2(3), 1/2
    assert cs[0].delta == pytest.approx(1 / math.log2(3) - 0.5)
    assert (cs[0].better, cs[0].t, cs[0].p_value) == (6, math.inf, 0.0)
    assert (cs[1].better, cs[1].unchanged) == (3, 3)
    assert cs[2].delta == pytest.approx(
        (3 * (1 - 1 / math.log2(3)) + 3 * (0.5 - 1 / math.log2(3))) / 6
    )
    assert (cs[2].better, cs[2].worse) == (3, 3)
    text = format_console(result)
    assert "paired t-test on nDCG@10, two-sided, over the 6 queries:" in text
    lines = text.splitlines()
    assert any(x.startswith("  M1 - first stage  +0.1309 ± 0.0000") for x in lines)
    assert any(x.startswith("  M2 - M1  ") for x in lines)
    assert [c["model"] for c in result.to_json()["comparisons"]] == ["a", "b", "b"]
