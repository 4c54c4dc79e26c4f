"""Dev-set evaluation during training, built on :mod:`crossrank.eval`.

Reranks the first-stage top ``top_k`` of a sample of dev queries with the model being trained
(pairs encoded once, scored with the core engine) and reports nDCG@10 of the reranked list
and of the first stage alone (pytrec_eval through ir-measures: the ``eval`` extra).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from crossrank.errors import InputError

logger = logging.getLogger(__name__)


class DevEvaluator:
    """Scores a fixed sample of dev queries' candidates with a model in training."""

    def __init__(
        self,
        dataset: str | Path,
        *,
        split: str,
        run: str | Path,
        max_queries: int | None,
        pair_tokenizer,
        pad_id: int,
        max_length: int,
        device: torch.device,
        top_k: int = 100,
        seed: int = 0,
    ) -> None:
        from crossrank.eval.beir import load_beir, sample_queries
        from crossrank.eval.metrics import evaluate
        from crossrank.eval.runs import read_run, top_candidates

        ds = load_beir(dataset, split)
        first = read_run(run, doc_ids=ds.corpus)
        pool = [
            q for q, docs in ds.qrels.items() if q in first and any(r > 0 for r in docs.values())
        ]
        if not pool:
            raise InputError(f"{run}: no query of the run is judged in split {split!r}")
        qids = sample_queries(pool, max_queries, seed)
        self.first = top_candidates({q: first[q] for q in qids}, top_k)
        self.qrels = ds.qrels
        pairs = [(ds.queries[q], ds.corpus[d]) for q in qids for d in self.first[q]]
        self.encoded = pair_tokenizer.encode(pairs, max_length=max_length)
        self.pair_tokenizer = pair_tokenizer
        self.pad_id = pad_id
        self.device = device
        self.first_ndcg = evaluate(self.qrels, {q: first[q] for q in qids})["nDCG@10"]
        logger.info(
            "dev evaluation: %d queries, %d pairs; first stage nDCG@10 %.4f",
            len(qids),
            len(pairs),
            self.first_ndcg,
        )

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from crossrank.engine.backend import TorchBackend
        from crossrank.engine.runner import Engine
        from crossrank.eval.metrics import evaluate

        engine = Engine(
            self.pair_tokenizer,
            TorchBackend(model, self.device, torch.float32),
            pad_id=self.pad_id,
            show_progress=False,
        )
        scores = engine.score_encoded(self.encoded)
        run: dict[str, dict[str, float]] = {}
        i = 0
        for q, docs in self.first.items():
            run[q] = {d: float(s) for d, s in zip(docs, scores[i : i + len(docs)])}
            i += len(docs)
        return {
            "ndcg@10": evaluate(self.qrels, run)["nDCG@10"],
            "first_stage_ndcg@10": self.first_ndcg,
        }
