"""IR metrics through ir-measures with the pytrec_eval provider (trec_eval's definitions)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from crossrank.errors import missing_extra

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
    if evaluated:
        provider = ir_measures.providers.registry["pytrec_eval"]
        for m in provider.evaluator(parsed, sub_qrels).iter_calc(sub_run):
            if m.query_id in per_query:
                per_query[m.query_id][str(m.measure)] = float(m.value)
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
