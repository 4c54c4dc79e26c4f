"""Paired comparison of two runs evaluated on the same queries: is a difference real?

Two rerankers that differ by 0.01 nDCG@10 on 200 queries may differ by chance. Like
PyTerrier's ``Experiment(..., baseline=0)`` (and trec_eval users' habit), ``crossrank eval``
reports for each model the mean per-query difference to a baseline, its standard error, a
two-sided paired t-test (scipy's Student's t, n - 1 degrees of freedom, as
``scipy.stats.ttest_rel``) and how many queries got better, worse or stayed the same.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from crossrank.errors import missing_extra
from crossrank.eval.metrics import Evaluation


@dataclass(frozen=True)
class Comparison:
    """``model`` against ``baseline`` on one measure, over the queries both evaluated.

    ``stderr``, ``t`` and ``p_value`` are None with fewer than 2 queries. When every
    per-query difference is the same, ``t`` is 0 (all zero: ``p_value`` 1) or infinite
    (``p_value`` 0), as the t-test's limit.
    """

    model: str
    baseline: str
    measure: str
    queries: int
    delta: float  # mean over queries of (model - baseline)
    stderr: float | None  # standard error of ``delta``
    t: float | None  # paired t statistic
    p_value: float | None  # two-sided
    better: int
    worse: int
    unchanged: int

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict; an infinite ``t`` becomes the string ``"inf"`` / ``"-inf"``."""
        out = asdict(self)
        if out["t"] is not None and math.isinf(out["t"]):
            out["t"] = "inf" if out["t"] > 0 else "-inf"
        return out

    def describe(self) -> str:
        """``+0.0123 ± 0.0045  t 2.73  p 0.0065  better 120 / worse 80 / unchanged 800``."""
        if self.stderr is None or self.t is None or self.p_value is None:
            stats = "(fewer than 2 queries: no test)"
        else:
            p = "<0.0001" if self.p_value < 1e-4 else f"{self.p_value:.4f}"
            stats = f"± {self.stderr:.4f}  t {self.t:.2f}  p {p}"
        return (
            f"{self.delta:+.4f} {stats}  better {self.better} / worse {self.worse} / "
            f"unchanged {self.unchanged}"
        )


def compare(
    run: Evaluation,
    baseline: Evaluation,
    measure: str = "nDCG@10",
    model: str = "model",
    baseline_name: str = "baseline",
) -> Comparison:
    """Paired comparison of ``run`` against ``baseline`` on ``measure``.

    Both are :func:`crossrank.eval.metrics.evaluate` results; the queries compared are those
    both evaluated.

    Example:
        >>> a, b = Evaluation(), Evaluation()
        >>> a.per_query = {"q1": {"nDCG@10": 0.5}, "q2": {"nDCG@10": 0.7}, "q3": {"nDCG@10": 0.2}}
        >>> b.per_query = {"q1": {"nDCG@10": 0.4}, "q2": {"nDCG@10": 0.7}, "q3": {"nDCG@10": 0.0}}
        >>> c = compare(a, b)
        >>> round(c.delta, 4), round(c.t, 3), round(c.p_value, 3), (c.better, c.worse, c.unchanged)
        (0.1, 1.732, 0.225, (2, 0, 1))
    """
    queries = [q for q in baseline.per_query if q in run.per_query]
    diffs = [run.per_query[q][measure] - baseline.per_query[q][measure] for q in queries]
    n = len(diffs)
    delta = sum(diffs) / n if n else 0.0
    stderr = t = p_value = None
    if n >= 2:
        sd = math.sqrt(sum((d - delta) ** 2 for d in diffs) / (n - 1))
        stderr = sd / math.sqrt(n)
        if stderr > 0:
            t = delta / stderr
            p_value = 2.0 * _t_sf(abs(t), n - 1)
        elif delta == 0:
            t, p_value = 0.0, 1.0
        else:
            t, p_value = math.copysign(math.inf, delta), 0.0
    return Comparison(
        model=model,
        baseline=baseline_name,
        measure=measure,
        queries=n,
        delta=delta,
        stderr=stderr,
        t=t,
        p_value=p_value,
        better=sum(d > 0 for d in diffs),
        worse=sum(d < 0 for d in diffs),
        unchanged=sum(d == 0 for d in diffs),
    )


def _t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy, a dependency of the
    ``eval`` extra's pytrec-eval-terrier)."""
    try:
        from scipy.stats import t as student_t
    except ImportError:
        raise missing_extra("eval", "scipy") from None
    return float(student_t.sf(t, df))
