"""score, rank and eval from the command line for every model family (in-process CLI calls):
the numbers equal the library's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.cli import main
from crossrank.reranker import Reranker
from crossrank.testing import short_max_length

TINY = Path(__file__).parent / "data" / "tiny-beir"
PAIRS = [
    ("what is a debian package?", "A Debian package is an archive of files. " * 10),
    ("what is a debian package?", "hi"),
    ("text editor", "vim is a highly configurable text editor"),
]


def test_score_rank_eval_for_every_family(family_dir, tmp_path, capsys, monkeypatch):
    from crossrank.eval.beir import load_beir
    from crossrank.eval.firststage import bm25_run
    from crossrank.eval.metrics import evaluate
    from crossrank.eval.reranking import rerank

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    max_length = short_max_length(family_dir, 40)
    rr = Reranker(family_dir, max_length=max_length, device="cpu")
    common = ["-m", str(family_dir), "--max-length", str(max_length), "--device", "cpu"]
    inp = tmp_path / "pairs.jsonl"
    inp.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS))
    out = tmp_path / "scores.jsonl"
    assert (
        main(["score", *common, "-i", str(inp), "-o", str(out), "--max-chunks-per-doc", "3"]) == 0
    )
    got = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert got == pytest.approx(rr.compute_score(PAIRS, max_chunks_per_doc=3), abs=1e-5)

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(p for _, p in PAIRS) + "\n")
    assert main(["rank", *common, "-q", PAIRS[0][0], "-d", str(docs), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = rr.rank(PAIRS[0][0], [p for _, p in PAIRS])
    assert [r["index"] for r in rows] == [r.index for r in want]

    metrics = tmp_path / "metrics.json"
    args = ["eval", *common, "--dataset", str(TINY), "--split", "test", "--top-k", "5"]
    assert main([*args, "--max-queries", "4", "--output", str(metrics)]) == 0
    data = json.loads(metrics.read_text())["models"][str(family_dir)]
    ds = load_beir(TINY, "test")
    from crossrank.eval.beir import sample_queries

    first = bm25_run(ds, 100)
    qids = sample_queries([q for q in ds.qrels if q in first], 4, 0)
    reranked = rerank(rr, ds, {q: first[q] for q in qids}, 5, query_ids=qids)
    assert data == pytest.approx(dict(evaluate(ds.qrels, reranked)), abs=1e-9)
