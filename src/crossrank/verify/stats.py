"""Agreement between two scorers, query by query, accumulated in bounded memory.

:func:`compare_group` compares one query's scores (rank correlations, top-k agreement, score
differences); :class:`CandidateStats` adds them up and keeps only the ``worst`` queries and a
fixed-size sample of score pairs (for the plot), so memory does not grow with the input.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the cut-offs of the top-k agreement
TOP_KS: tuple[int, ...] = (1, 5, 10)
#: score pairs kept for the plot, per candidate
SAMPLE_SIZE = 4000


def order(scores: np.ndarray) -> np.ndarray:
    """Indices best first; ties keep input order (as ``Reranker.rank``)."""
    return np.argsort(-scores, kind="stable")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    sorter = np.argsort(x, kind="stable")
    xs = x[sorter]
    distinct = np.concatenate(([True], xs[1:] != xs[:-1]))
    group = np.cumsum(distinct) - 1
    starts = np.flatnonzero(distinct)
    ends = np.append(starts[1:], len(x))
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[sorter] = mean_rank[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties; NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den > 0 else math.nan


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties accounted for, as scipy's default); NaN when a side is constant."""
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), k=1)
    da, db = da[iu], db[iu]
    den = math.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    return float((da * db).sum()) / den if den > 0 else math.nan


@dataclass
class QueryComparison:
    """One query's agreement between the reference and a candidate (on one scale)."""

    n: int
    max_diff: float
    sum_diff: float
    spearman: float
    kendall: float
    top: dict[int, float]
    top10_changed: bool

    @property
    def badness(self) -> tuple[float, float]:
        """Sort key of the worst queries: lowest Spearman, then largest difference."""
        rho = self.spearman if math.isfinite(self.spearman) else 1.0
        return (-rho, self.max_diff)


def compare_group(ref: np.ndarray, cand: np.ndarray) -> QueryComparison:
    """Compare one query's reference and candidate scores (same documents, same order)."""
    diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
    n = len(ref)
    ro, co = order(ref), order(cand)
    top = {k: len(set(ro[:k]) & set(co[:k])) / min(k, n) for k in TOP_KS}
    return QueryComparison(
        n=n,
        max_diff=float(diff.max()),
        sum_diff=float(diff.sum()),
        spearman=spearman(ref, cand) if n > 1 else math.nan,
        kendall=kendall_tau(ref, cand) if n > 1 else math.nan,
        top=top,
        top10_changed=set(ro[:10]) != set(co[:10]),
    )


def worst_rows(
    doc_ids: Sequence[str], texts: Sequence[str], ref: np.ndarray, cand: np.ndarray, k: int = 10
) -> list[dict[str, Any]]:
    """The pairs worth showing for a bad query: the reference's top ``k`` and every document
    that entered the candidate's top ``k``, in reference order (texts cut to 160 chars)."""
    ro, co = order(ref), order(cand)
    ref_rank = np.empty(len(ref), dtype=int)
    cand_rank = np.empty(len(ref), dtype=int)
    ref_rank[ro] = np.arange(1, len(ref) + 1)
    cand_rank[co] = np.arange(1, len(ref) + 1)
    shown = sorted(set(ro[:k].tolist()) | set(co[:k].tolist()), key=lambda i: ref_rank[i])
    return [
        {
            "doc_id": doc_ids[i],
            "text": texts[i][:160],
            "reference": float(ref[i]),
            "candidate": float(cand[i]),
            "reference_rank": int(ref_rank[i]),
            "candidate_rank": int(cand_rank[i]),
        }
        for i in shown
    ]


@dataclass
class CandidateStats:
    """Running totals of one candidate against the reference (per-query means)."""

    worst_k: int = 5
    queries: int = 0
    pairs: int = 0
    max_diff: float = 0.0
    sum_diff: float = 0.0
    rho_sum: float = 0.0
    tau_sum: float = 0.0
    correlated: int = 0
    top_sum: dict[int, float] = field(default_factory=lambda: dict.fromkeys(TOP_KS, 0.0))
    top10_changed: int = 0
    failed: int = 0
    first_error: str | None = None
    _worst: list[tuple[tuple[float, float], int, dict[str, Any]]] = field(default_factory=list)
    sample: list[tuple[float, float]] = field(default_factory=list)
    _seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add(self, group: Any, ref: np.ndarray, cand: np.ndarray) -> QueryComparison:
        """Add one query (a :class:`~crossrank.verify.groups.QueryGroup` and both scores)."""
        c = compare_group(ref, cand)
        self.queries += 1
        self.pairs += c.n
        self.max_diff = max(self.max_diff, c.max_diff)
        self.sum_diff += c.sum_diff
        if math.isfinite(c.spearman) and math.isfinite(c.kendall):
            self.correlated += 1
            self.rho_sum += c.spearman
            self.tau_sum += c.kendall
        for k in TOP_KS:
            self.top_sum[k] += c.top[k]
        self.top10_changed += c.top10_changed
        self._keep_worst(group, ref, cand, c)
        self._sample(ref, cand)
        return c

    def fail(self, error: BaseException) -> None:
        """Count a query the candidate could not score."""
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(error).__name__}: {error}"

    def _keep_worst(self, group: Any, ref: np.ndarray, cand: np.ndarray, c: QueryComparison):
        if self.worst_k <= 0:
            return
        key = c.badness
        if len(self._worst) >= self.worst_k and key <= self._worst[0][0]:
            return
        record = {
            "query_id": group.qid,
            "query": group.query,
            "spearman": c.spearman,
            "kendall": c.kendall,
            "max_abs_diff": c.max_diff,
            "top10_agreement": c.top[10],
            "pairs": worst_rows(group.doc_ids, group.texts, ref, cand),
        }
        item = (key, self.queries, record)
        if len(self._worst) < self.worst_k:
            heapq.heappush(self._worst, item)
        else:
            heapq.heapreplace(self._worst, item)

    def _sample(self, ref: np.ndarray, cand: np.ndarray) -> None:
        for r, c in zip(ref.tolist(), cand.tolist()):  # reservoir sampling
            self._seen += 1
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append((r, c))
            else:
                j = self._rng.randrange(self._seen)
                if j < SAMPLE_SIZE:
                    self.sample[j] = (r, c)

    @property
    def worst(self) -> list[dict[str, Any]]:
        """The worst queries kept, worst first."""
        return [rec for _, _, rec in sorted(self._worst, key=lambda t: t[:2], reverse=True)]

    def summary(self) -> dict[str, Any]:
        """The per-candidate numbers of the report (means over queries; NaN as None)."""
        q = self.queries

        def mean(total: float, n: int) -> float | None:
            return total / n if n else None

        out: dict[str, Any] = {
            "queries": q,
            "pairs": self.pairs,
            "failed_queries": self.failed,
            "max_abs_diff": self.max_diff if q else None,
            "mean_abs_diff": mean(self.sum_diff, self.pairs),
            "spearman": mean(self.rho_sum, self.correlated),
            "kendall_tau": mean(self.tau_sum, self.correlated),
        }
        for k in TOP_KS:
            out[f"top{k}_agreement"] = mean(self.top_sum[k], q)
        out["top10_changed"] = self.top10_changed
        if self.first_error:
            out["first_error"] = self.first_error
        return out
