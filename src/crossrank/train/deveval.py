"""Dev-set evaluation during training, and the small BEIR / TREC readers ``mine`` shares.

Reads a BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and a TREC
run file, reranks the run's top ``top_k`` for up to ``max_queries`` queries with the model
being trained, and reports nDCG@10 of the reranked list and of the first stage alone
(computed by pytrec_eval through ir-measures, the ``eval`` extra).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from crossrank.errors import InputError, missing_extra

logger = logging.getLogger(__name__)


def read_queries(dataset: Path) -> dict[str, str]:
    path = Path(dataset) / "queries.jsonl"
    out: dict[str, str] = {}
    for lineno, obj in _jsonl(path):
        try:
            out[str(obj["_id"])] = str(obj["text"])
        except KeyError as exc:
            raise InputError(f"{path}:{lineno}: missing field {exc.args[0]!r}") from None
    return out


def read_corpus(dataset: Path, keep: set[str] | None = None) -> dict[str, str]:
    """Document texts (``title`` + ``text`` as BEIR joins them), only ``keep`` ids if given."""
    path = Path(dataset) / "corpus.jsonl"
    out: dict[str, str] = {}
    for lineno, obj in _jsonl(path):
        try:
            doc_id = str(obj["_id"])
        except KeyError:
            raise InputError(f"{path}:{lineno}: missing field '_id'") from None
        if keep is not None and doc_id not in keep:
            continue
        title, text = obj.get("title") or "", obj.get("text") or ""
        out[doc_id] = f"{title} {text}".strip() if title else text
    return out


def read_qrels(dataset: Path, split: str) -> dict[str, dict[str, int]]:
    path = Path(dataset) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise InputError(f"{path}: no such file (BEIR qrels for split {split!r})")
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise InputError(f"{path}:{lineno}: expected query-id, corpus-id, score")
            try:
                out[parts[0]][parts[1]] = int(parts[2])
            except ValueError:
                raise InputError(f"{path}:{lineno}: score {parts[2]!r} is not an integer") from None
    return dict(out)


def read_run(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run ``qid Q0 docid rank score tag`` as ranked lists (best first) per query."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    runs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise InputError(f"{path}:{lineno}: a TREC run line has 6 fields")
            try:
                runs[parts[0]].append((parts[2], float(parts[4])))
            except ValueError:
                raise InputError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
    return {q: sorted(docs, key=lambda x: -x[1]) for q, docs in runs.items()}


def _jsonl(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    """Mean nDCG@10 over the queries of ``run`` (pytrec_eval via ir-measures)."""
    try:
        import ir_measures
    except ImportError:
        raise missing_extra("eval", "ir-measures") from None
    measure = ir_measures.nDCG @ 10
    qrels = {q: qrels[q] for q in run if q in qrels}
    return float(ir_measures.calc_aggregate([measure], qrels, run)[measure])


class DevEvaluator:
    """Reranks a sample of dev queries with a model in training and reports nDCG@10."""

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
    ) -> None:
        dataset = Path(dataset)
        qrels = read_qrels(dataset, split)
        queries = read_queries(dataset)
        first = read_run(run)
        qids = sorted(q for q in first if q in qrels and q in queries)
        if max_queries:
            qids = qids[:max_queries]
        if not qids:
            raise InputError(f"{run}: no query of the run has qrels in split {split!r}")
        self.first = {q: [d for d, _ in first[q][:top_k]] for q in qids}
        keep = {d for docs in self.first.values() for d in docs}
        corpus = read_corpus(dataset, keep)
        self.pairs = [(queries[q], corpus.get(d, "")) for q in qids for d in self.first[q]]
        self.qrels = qrels
        self.encoded = pair_tokenizer.encode(self.pairs, max_length=max_length)
        self.pad_id = pad_id
        self.device = device
        self.pair_tokenizer = pair_tokenizer
        self.first_ndcg = ndcg10(
            qrels,
            {
                q: {d: float(len(docs) - i) for i, d in enumerate(docs)}
                for q, docs in self.first.items()
            },
        )
        logger.info(
            "dev evaluation: %d queries, %d pairs; first stage nDCG@10 %.4f",
            len(qids),
            len(self.pairs),
            self.first_ndcg,
        )

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from crossrank.engine.backend import TorchBackend
        from crossrank.engine.runner import Engine

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
        return {"ndcg@10": ndcg10(self.qrels, run), "first_stage_ndcg@10": self.first_ndcg}


def sample_rank_range(n: int, lo: int, hi: int, k: int, rng: np.random.Generator) -> list[int]:
    """Up to ``k`` distinct indices from ``[lo, min(hi, n))`` in rank order."""
    pool = np.arange(lo, min(hi, n))
    if len(pool) <= k:
        return [int(i) for i in pool]
    return sorted(int(i) for i in rng.choice(pool, size=k, replace=False))
