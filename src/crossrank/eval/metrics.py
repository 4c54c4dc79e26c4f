"""IR metrics through ir-measures with the pytrec_eval provider (trec_eval's definitions)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from crossrank.errors import InputError, missing_extra
from crossrank.eval.runs import ranked

logger = logging.getLogger(__name__)

#: the measures reported by ``crossrank eval`` (ir-measures names); nDCG@10 is the primary one
MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@10", "R@100", "AP@100")


class Evaluation(dict):
    """Mean metric values (``{"nDCG@10": 0.71, ...}``) plus what was evaluated.

    A plain ``dict`` of measure name -> mean over the evaluated queries, with attributes:

    - ``per_query``: query id -> measure name -> value;
    - ``queries``: the number of queries evaluated (those in the run with at least one
      relevant document in the qrels);
    - ``skipped_no_relevant``: queries of the run whose judgments hold no relevant document
      (skipped, like pytrec_eval; they would score 0 whatever the ranking);
    - ``not_in_run``: judged queries with relevant documents that the run does not mention
      (skipped, like pytrec_eval; a query present with no documents counts, and scores 0).
    """

    per_query: dict[str, dict[str, float]]
    queries: int
    skipped_no_relevant: int
    not_in_run: int


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: Sequence[str] = MEASURES,
) -> Evaluation:
    """Metrics of ``run`` against ``qrels``, averaged over the queries evaluated.

    The queries evaluated are those of ``run`` with at least one relevant judgment
    (relevance > 0); the values equal pytrec_eval's ``RelevanceEvaluator`` on that set.
    Graded relevance counts as gain for nDCG; recall, RR and AP count relevance >= 1.

    Example:
        >>> ev = evaluate({"q1": {"d1": 1}}, {"q1": {"d1": 0.5, "d2": 0.9}})
        >>> round(ev["nDCG@10"], 4), ev.queries
        (0.6309, 1)
    """
    try:
        import ir_measures
    except ImportError:
        raise missing_extra("eval", "ir-measures") from None
    parsed = [ir_measures.parse_measure(m) for m in measures]
    names = [str(m) for m in parsed]
    judged = {qid: docs for qid, docs in qrels.items() if any(r > 0 for r in docs.values())}
    in_run = [qid for qid in run if qid in qrels]
    evaluated = [qid for qid in in_run if qid in judged]
    sub_qrels = {qid: {d: int(r) for d, r in judged[qid].items()} for qid in evaluated}
    sub_run = {qid: {d: float(s) for d, s in run[qid].items()} for qid in evaluated}
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(names, 0.0) for qid in evaluated}
    provider = ir_measures.providers.registry["pytrec_eval"]
    for name, measure, cutoff in _plan(provider, parsed):
        if not evaluated:
            break
        runs = sub_run if cutoff is None else {q: _truncate(d, cutoff) for q, d in sub_run.items()}
        for m in provider.evaluator([measure], sub_qrels).iter_calc(runs):
            if m.query_id in per_query:
                per_query[m.query_id][name] = float(m.value)
    n = len(evaluated)
    result = Evaluation(
        {name: (sum(v[name] for v in per_query.values()) / n if n else 0.0) for name in names}
    )
    result.per_query = per_query
    result.queries = n
    result.skipped_no_relevant = len(in_run) - n
    result.not_in_run = sum(1 for qid in judged if qid not in run)
    if result.skipped_no_relevant:
        logger.info("%d queries without relevant documents skipped", result.skipped_no_relevant)
    return result


def _plan(provider: Any, measures: Sequence[Any]) -> list[tuple[str, Any, int | None]]:
    """``(name, measure to compute, cutoff to truncate the run at)`` for each measure.

    pytrec_eval's ``recip_rank`` has no cutoff, and ir-measures' pytrec_eval provider silently
    ignores the one of ``RR@k``; trec_eval's RR@k is ``recip_rank`` of the top-k documents, so
    those measures are computed on the run truncated at k (in trec_eval's order).
    """
    plan = []
    for m in measures:
        if provider.supports(m):
            plan.append((str(m), m, None))
        elif m.NAME == "RR" and isinstance(m["cutoff"], int):
            uncut = type(m)(**{k: v for k, v in m.params.items() if k != "cutoff"})
            plan.append((str(m), uncut, m["cutoff"]))
        else:
            raise InputError(f"measure {m} is not supported by the pytrec_eval provider")
    return plan


def _truncate(docs: Mapping[str, float], k: int) -> dict[str, float]:
    return dict(ranked(docs)[:k])
