"""``verify``: score query groups with a reference and candidates, compare, accumulate.

Groups are read lazily and at most ``window`` of them are in flight: in-process scorers run
one call at a time on one thread (each already uses every core), services get up to
``concurrency`` requests at once (a group split into requests of the service's ``batch``).
Per-query statistics are added up as each group completes, in input order, and the group is
then dropped, so memory does not depend on the input's size.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrank.errors import CrossrankError
from crossrank.progress import bar as progress_bar
from crossrank.verify.clients import ServiceError
from crossrank.verify.groups import QueryGroup
from crossrank.verify.scorers import Scorer
from crossrank.verify.stats import CandidateStats

logger = logging.getLogger(__name__)

#: the ranking metric computed with qrels
NDCG = "nDCG@10"
#: the reference's nDCG@10 on the queries a candidate answered (its failed ones left out)
REF_NDCG = "reference_nDCG@10"
#: queries evaluated together (ir-measures) when qrels are given
NDCG_FLUSH = 256


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def to_scale(scores: np.ndarray, have: str, want: str) -> np.ndarray:
    """``scores`` given on scale ``have`` (logit / sigmoid), on scale ``want``."""
    if have == want:
        return scores
    if want == "sigmoid":
        return sigmoid(scores)
    p = np.clip(scores, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def detect_scale(cand: np.ndarray, ref_logits: np.ndarray | None = None) -> str:
    """The scale a scorer answers on: ``logit`` when a score lies outside [0, 1]; otherwise
    whichever of the reference's logits or their sigmoid the scores are closer to (sigmoid
    without a reference)."""
    if np.any((cand < 0) | (cand > 1)):
        return "logit"
    if ref_logits is None:
        return "sigmoid"
    as_logit = float(np.mean(np.abs(cand - ref_logits)))
    as_sigmoid = float(np.mean(np.abs(cand - sigmoid(ref_logits))))
    return "logit" if as_logit < as_sigmoid else "sigmoid"


@dataclass
class Side:
    """One scorer's place in the comparison: detected scale, statistics, nDCG."""

    scorer: Scorer
    scale: str | None
    stats: CandidateStats
    compared_on: str | None = None
    ndcg_sum: float = 0.0
    ndcg_n: int = 0
    runs: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the reference's nDCG@10 on the queries this side answered
    ref_ndcg_sum: float = 0.0
    ref_runs: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class VerifyResult:
    """What the report shows: the reference, each candidate's numbers, the totals."""

    reference: dict[str, Any]
    candidates: list[dict[str, Any]]
    queries: int
    skipped: int
    scale: str
    worst: dict[str, list[dict[str, Any]]]
    samples: dict[str, list[tuple[float, float]]]
    ndcg_queries: int = 0


class _Ndcg:
    """nDCG@10 per scorer, evaluated by :func:`crossrank.eval.metrics.evaluate` in slices."""

    def __init__(self, qrels: Mapping[str, Mapping[str, int]] | None) -> None:
        self.qrels = qrels
        self.queries = 0

    def add(
        self, side: Side, group: QueryGroup, scores: np.ndarray, ref: np.ndarray | None = None
    ) -> None:
        if self.qrels is None or group.qid not in self.qrels:
            return
        side.runs[group.qid] = dict(zip(group.doc_ids, scores.tolist()))
        if ref is not None:
            side.ref_runs[group.qid] = dict(zip(group.doc_ids, ref.tolist()))
        if len(side.runs) >= NDCG_FLUSH:
            self.flush(side)

    def flush(self, side: Side) -> None:
        from crossrank.eval.metrics import evaluate

        if not side.runs or self.qrels is None:
            return
        ev = evaluate(self.qrels, side.runs, [NDCG])
        side.ndcg_sum += ev[NDCG] * ev.queries
        side.ndcg_n += ev.queries
        side.runs.clear()
        if side.ref_runs:
            side.ref_ndcg_sum += evaluate(self.qrels, side.ref_runs, [NDCG])[NDCG] * ev.queries
            side.ref_runs.clear()


def _submit(
    scorer: Scorer, group: QueryGroup, local: ThreadPoolExecutor, remote: ThreadPoolExecutor
) -> list[Future]:
    if not scorer.remote:
        return [local.submit(scorer.score, group.query, group.texts)]
    b = scorer.batch_size or len(group.texts)
    return [
        remote.submit(scorer.score, group.query, group.texts[i : i + b])
        for i in range(0, len(group.texts), b)
    ]


def _gather(futures: list[Future]) -> np.ndarray:
    return np.asarray([s for f in futures for s in f.result()], dtype=np.float64)


def verify(
    groups: Iterable[QueryGroup],
    reference: Scorer,
    candidates: Sequence[Scorer],
    *,
    scale: str = "auto",
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    concurrency: int = 4,
    window: int | None = None,
    worst: int = 5,
    progress: bool | None = None,
) -> VerifyResult:
    """Compare ``candidates`` with ``reference`` on ``groups`` (read lazily).

    ``scale``: ``logit`` or ``sigmoid`` compares every candidate on that scale; ``auto`` on
    the logit scale when both sides answer logits, else on the sigmoid scale. A scorer's own
    scale is its ``scale`` or, when None, detected on the first group it answers.
    With ``qrels``, nDCG@10 of the reference and of each candidate is computed too.
    A service that fails a request after its retries fails that query for that candidate
    (counted, the first error kept); the reference failing drops the query; a candidate that
    fails every query is a :class:`~crossrank.verify.clients.ServiceError`.

    Raises:
        CrossrankError: a user's mistake: a service refused a request (wrong URL, dialect or
            key) or is unreachable (:class:`~crossrank.verify.clients.ServiceError`), bad input.
    """
    ref = Side(reference, reference.scale, CandidateStats(worst_k=0))
    sides = [Side(c, c.scale, CandidateStats(worst_k=worst)) for c in candidates]
    ndcg = _Ndcg(qrels)
    window = window or max(2, concurrency)
    pending: deque[tuple[QueryGroup, list[list[Future]]]] = deque()
    done = skipped = 0
    bar = progress_bar(show=progress, total=None, desc="verify", unit=" queries")
    with (
        ThreadPoolExecutor(1, thread_name_prefix="verify-local") as local,
        ThreadPoolExecutor(concurrency, thread_name_prefix="verify-http") as remote,
    ):

        def finish() -> None:
            nonlocal done, skipped
            group, futures = pending.popleft()
            try:
                ref_scores = _gather(futures[0])
            except CrossrankError:
                raise
            except Exception as exc:  # a service failing this query
                logger.warning("reference failed on %s: %s", group.where, exc)
                skipped += 1
                return
            if ref.scale is None:
                ref.scale = detect_scale(ref_scores)
            ref_logits = to_scale(ref_scores, ref.scale, "logit")
            ndcg.add(ref, group, ref_scores)
            for side, futs in zip(sides, futures[1:]):
                try:
                    scores = _gather(futs)
                except CrossrankError:
                    raise
                except Exception as exc:
                    side.stats.fail(exc)
                    continue
                if side.scale is None:
                    side.scale = detect_scale(scores, ref_logits)
                    logger.info("%s answers on the %s scale", side.scorer.name, side.scale)
                if side.compared_on is None:
                    both_logit = side.scale == ref.scale == "logit"
                    side.compared_on = (
                        scale if scale != "auto" else ("logit" if both_logit else "sigmoid")
                    )
                a = to_scale(ref_scores, ref.scale, side.compared_on)
                b = to_scale(scores, side.scale, side.compared_on)
                side.stats.add(group, a, b)
                ndcg.add(side, group, scores, ref_scores)
            done += 1
            bar.update(1)

        try:
            for group in groups:
                futures = [_submit(s.scorer, group, local, remote) for s in (ref, *sides)]
                pending.append((group, futures))
                while len(pending) >= window:
                    finish()
            while pending:
                finish()
        finally:
            for _, futures in pending:
                for f in (f for fs in futures for f in fs):
                    f.cancel()
            bar.close()
    for side in (ref, *sides):
        ndcg.flush(side)
    for side in sides:
        if side.stats.failed and not side.stats.queries:
            raise ServiceError(
                f"{side.scorer.name}: every query failed; the first error: {side.stats.first_error}"
            )

    def ndcg_of(side: Side) -> float | None:
        return side.ndcg_sum / side.ndcg_n if side.ndcg_n else None

    reference_info = {"name": reference.name, **reference.describe(), "scale": ref.scale}
    if qrels is not None:
        reference_info[NDCG] = ndcg_of(ref)
    rows = []
    for side in sides:
        row = {"name": side.scorer.name, **side.scorer.describe()}
        row |= {"scale": side.scale, "compared_on": side.compared_on, **side.stats.summary()}
        if qrels is not None:
            row[NDCG] = ndcg_of(side)
            row[REF_NDCG] = side.ref_ndcg_sum / side.ndcg_n if side.ndcg_n else None
        rows.append(row)
    return VerifyResult(
        reference=reference_info,
        candidates=rows,
        queries=done,
        skipped=skipped,
        scale=scale,
        worst={s.scorer.name: s.stats.worst for s in sides},
        samples={s.scorer.name: s.stats.sample for s in sides},
        ndcg_queries=ref.ndcg_n,
    )
