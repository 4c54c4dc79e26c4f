"""``crossrank demo``: offline example ranking, and the dev table when a dataset is given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_demo(*args, cwd=None):
    import crossrank

    # the crossrank under test, also when running from another directory
    src = str(Path(crossrank.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env.pop("CROSSRANK_DEBIAN_IR", None)
    return subprocess.run(
        [sys.executable, "-m", "crossrank", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_demo_ranks_the_example_offline(tmp_path):
    res = run_demo("--queries", "0", cwd=tmp_path)  # no dataset next to tmp_path
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    table = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(table) == 10
    assert "no dev-set evaluation" in res.stdout
    # the bundled model's language is said where the demo offers it
    assert "crossrank/minilm-debian: the bundled model, small, offline and English only" in (
        res.stdout
    )


def test_demo_prints_the_dev_table_for_a_dataset(tmp_path):
    root = tmp_path / "debian-ir"
    (root / "qrels").mkdir(parents=True)
    docs = {"d1": "wget retrieves files from the web", "d2": "a photo editor", "d3": "a game"}
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "download files"}) + "\n")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    run = "".join(f"q1 Q0 {d} {i + 1} {10 - i} bm25\n" for i, d in enumerate(["d3", "d2", "d1"]))
    (root / "dev.bm25.top100.run").write_text(run)
    res = run_demo("--dataset", str(root), "--queries", "1")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "nDCG@10" in out and "crossrank/minilm-debian" in out
    row = next(line for line in out.splitlines() if line.startswith("nDCG@10"))
    assert row.split()[1] == "0.5000"  # BM25 put the relevant document third
    assert Path(root).is_dir()


def test_demo_sample_ships_in_the_package():
    """The demo's debian-ir sample is in the package (the dataset may be absent): 64 dev
    queries, BM25's top 30 of each, each query's package among them."""
    from crossrank.bundled import DEMO_SAMPLE, DEMO_SAMPLE_RUN
    from crossrank.eval.beir import load_beir
    from crossrank.eval.runs import read_run

    ds = load_beir(DEMO_SAMPLE, "dev")
    run = read_run(DEMO_SAMPLE_RUN, doc_ids=ds.corpus)
    assert len(ds.queries) == len(run) == 64
    assert all(len(docs) == 30 for docs in run.values())
    assert all(any(d in run[q] for d in judged) for q, judged in ds.qrels.items())


def test_demo_reranks_the_shipped_sample_and_shows_the_moves(tmp_path):
    """No dataset anywhere: the demo still reranks (a few queries of) its shipped sample and
    says what reranking did to each query's package."""
    res = run_demo("--queries", "6", "--seed", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "sample of 6 of 64 (seed 3)" in out and "top 30 reranked" in out
    assert "the rank of each query's package after reranking: up for " in out
    assert "nDCG@10" in out and "+0.0000 ± 0.0000" not in out, out
