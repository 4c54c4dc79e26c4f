"""``crossrank eval`` end to end in a subprocess, on the tiny BEIR dataset in tests/data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crossrank.eval.beir import load_beir
from crossrank.eval.metrics import MEASURES, evaluate
from crossrank.eval.runs import read_run

TINY = Path(__file__).parent / "data" / "tiny-beir"
SRC = Path(__file__).resolve().parent.parent / "src"


def crossrank(*args, cache: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "CROSSRANK_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "crossrank", "eval", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bm25cache")


def test_two_models_json_report_runs(bert_dir, xlmr_dir, tmp_path, cache):
    out = tmp_path / "out.json"
    proc = crossrank(
        "--dataset", TINY, "--split", "test", "--model", bert_dir, "--model", xlmr_dir,
        "--first-stage", "bm25", "--top-k", "5", "--max-queries", "6", "--seed", "1",
        "--output", out, "--report", tmp_path / "report.md", "--save-run", tmp_path / "rr.run",
        "--save-first-stage", tmp_path / "fs.run", "--max-length", "64", "--batch-size", "4",
        "--device", "cpu", "--dtype", "fp32",
        cache=cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert list(data) == ["dataset", "split", "queries", "first_stage", "models", "comparisons"]
    assert data["dataset"] == str(TINY) and data["split"] == "test" and data["queries"] == 6
    assert list(data["first_stage"]) == list(MEASURES)
    assert list(data["models"]) == [str(bert_dir), str(xlmr_dir)]
    for metrics in [data["first_stage"], *data["models"].values()]:
        assert list(metrics) == list(MEASURES)
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())

    # the numbers equal pytrec_eval's (via evaluate) on the saved runs
    ds = load_beir(TINY, "test")
    first = read_run(tmp_path / "fs.run")
    assert len(first) == 6
    assert dict(evaluate(ds.qrels, first)) == pytest.approx(data["first_stage"], abs=1e-12)
    runs = sorted(tmp_path.glob("rr.*.run"))
    assert [p.name for p in runs] == ["rr.1-bert.run", "rr.2-xlmr.run"]
    for path, model in zip(runs, data["models"]):
        reranked = read_run(path, doc_ids=ds.corpus)
        assert set(reranked) == set(first)
        assert all(set(reranked[q]) == set(first[q]) for q in first)  # reordered, same docs
        assert dict(evaluate(ds.qrels, reranked)) == pytest.approx(data["models"][model])
    # paired tests: each model against the first stage, then M2 against M1, on nDCG@10
    comps = data["comparisons"]
    bert, xlmr = map(str, (bert_dir, xlmr_dir))
    assert [(c["model"], c["baseline"] != bert) for c in comps] == [
        (bert, True), (xlmr, True), (xlmr, False)
    ]  # fmt: skip
    per_query = [evaluate(ds.qrels, read_run(p, doc_ids=ds.corpus)).per_query for p in runs]
    diffs = [per_query[1][q]["nDCG@10"] - per_query[0][q]["nDCG@10"] for q in first]
    assert comps[2]["queries"] == 6 and comps[2]["measure"] == "nDCG@10"
    assert comps[2]["delta"] == pytest.approx(sum(diffs) / 6, abs=1e-12)
    assert comps[2]["better"] == sum(d > 0 for d in diffs)
    assert comps[2]["worse"] == sum(d < 0 for d in diffs)
    assert "paired t-test on nDCG@10" in proc.stdout and "M2 - M1" in proc.stdout
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| nDCG@10 |" in (tmp_path / "report.md").read_text()
    assert "first stage" in proc.stdout and "M2 = " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_run_file_first_stage_and_reproducible_sample(bert_dir, tmp_path, cache):
    ds = load_beir(TINY, "test")
    run_path = tmp_path / "given.run"
    lines = []
    for qid in ds.qrels:
        for rank, doc in enumerate(sorted(ds.corpus)[:8], 1):
            lines.append(f"{qid} Q0 {doc} {rank} {10 - rank} given\n")
    run_path.write_text("".join(lines))
    common = ("--dataset", TINY, "--split", "test", "--run", run_path, "--max-queries", "4")
    a = crossrank(*common, "--seed", "7", "--save-first-stage", tmp_path / "a.run", cache=cache)
    b = crossrank(*common, "--seed", "7", "--save-first-stage", tmp_path / "b.run", cache=cache)
    c = crossrank(*common, "--seed", "8", "--save-first-stage", tmp_path / "c.run", cache=cache)
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr + c.stderr
    assert a.stdout == b.stdout and "sample of 4 of 10 (seed 7)" in a.stdout
    sample = read_run(tmp_path / "a.run")
    assert len(sample) == 4 and sample == read_run(tmp_path / "b.run")
    assert set(sample) != set(read_run(tmp_path / "c.run"))

    out = tmp_path / "m.json"
    proc = crossrank(*common, "--seed", "7", "-m", bert_dir, "-k", "3", "-o", out, cache=cache)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["queries"] == 4
    assert data["first_stage"] == pytest.approx(dict(evaluate(ds.qrels, sample)), abs=1e-12)
    assert data["first_stage"]["R@10"] == data["models"][str(bert_dir)]["R@10"]  # top 3 of 8


def test_no_progress_bar_when_stderr_is_not_a_terminal(bert_dir, tmp_path, cache):
    """1,100 distinct pairs (a bar from 1024 on a terminal); stderr is a pipe: no bar."""
    data = tmp_path / "big"
    (data / "qrels").mkdir(parents=True)
    words = ["editor", "server", "shell", "mail", "image", "audio", "python", "kernel"]
    with open(data / "corpus.jsonl", "w") as f:
        for i in range(110):
            text = f"{words[i % 8]} tool number {i} for {words[(i * 3) % 8]} work"
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(data / "queries.jsonl", "w") as f:
        for q in range(10):
            f.write(json.dumps({"_id": f"q{q}", "text": f"{words[q % 8]} tool {q}"}) + "\n")
    qrels = "".join(f"q{q}\td{q}\t1\n" for q in range(10))
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    run = tmp_path / "all.run"
    run.write_text(
        "".join(f"q{q} Q0 d{d} {d + 1} {110 - d} t\n" for q in range(10) for d in range(110))
    )
    args = ("--dataset", data, "--split", "test", "--run", run, "-k", "110", "-m", bert_dir)
    proc = crossrank(*args, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert "10 queries evaluated" in proc.stdout
    assert "pair/s" not in proc.stderr and "\r" not in proc.stderr, proc.stderr[:500]


def bad_dataset(tmp_path: Path, what: str) -> Path:
    dst = tmp_path / what
    shutil.copytree(TINY, dst)
    if what == "empty":
        (dst / "corpus.jsonl").write_text("")
    return dst


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-split", "no qrels for split 'nope'"),
        ("unknown-doc", "bad.run:2: document 'd404' is not in the corpus"),
        ("empty-dataset", "corpus is empty"),
        ("no-dataset", "no such dataset directory"),
        ("top-k", "--top-k must be >= 1"),
        ("max-queries", "--max-queries must be >= 1"),
        ("no-model", "does not exist"),
        ("both-first-stages", "not allowed with argument"),
        ("no-run-file", "no such run file"),
        ("output-dir", "does not exist; create it"),
        ("run-not-judged", "no query of the run is judged"),
    ],
)
def test_bad_input_exit_2_one_line(case, message, tmp_path, cache):
    bad_run = tmp_path / "bad.run"
    bad_run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d404 2 1.0 t\n")
    other_run = tmp_path / "other.run"
    other_run.write_text("q11 Q0 d1 1 2.0 t\n")
    base = ["--dataset", TINY, "--split", "test"]
    args = {
        "missing-split": ["--dataset", TINY, "--split", "nope"],
        "unknown-doc": [*base, "--run", bad_run],
        "empty-dataset": ["--dataset", bad_dataset(tmp_path, "empty"), "--split", "test"],
        "no-dataset": ["--dataset", tmp_path / "nope", "--split", "test"],
        "top-k": [*base, "--top-k", "0"],
        "max-queries": [*base, "--max-queries", "0"],
        "no-model": [*base, "--model", tmp_path / "no-such-model"],
        "both-first-stages": [*base, "--run", bad_run, "--first-stage", "bm25"],
        "no-run-file": [*base, "--run", tmp_path / "missing.run"],
        "output-dir": [*base, "--output", tmp_path / "no" / "dir.json"],
        "run-not-judged": [*base, "--run", other_run],
    }[case]
    proc = crossrank(*args, cache=cache)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
