"""``crossrank mine`` end to end on a tiny BEIR dataset."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

WORDS = [
    "apple",
    "banana",
    "cherry",
    "debian",
    "kernel",
    "python",
    "rust",
    "network",
    "audio",
    "video",
    "font",
    "game",
]


def tiny_beir(root: Path) -> Path:
    root.mkdir()
    (root / "qrels").mkdir()
    docs = [
        {"_id": f"d{i}", "title": "", "text": f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} package {i}"}
        for i in range(40)
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{i}", "text": f"{WORDS[i]} package"} for i in range(4)]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(4)] + ["q0\td12\t1"]
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    # a run ranking d0..d39 for every query (q0's positives at ranks 1 and 13)
    lines = [f"q{i} Q0 d{j} {j + 1} {100 - j} run" for i in range(4) for j in range(40)]
    (root / "run.trec").write_text("\n".join(lines) + "\n")
    return root


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "crossrank", *args], capture_output=True, text=True, timeout=300
    )


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def test_mine_from_a_run_file_samples_reproducibly_from_the_rank_range(tmp_path, bert_dir):
    from crossrank.train.data import load_examples

    ds = tiny_beir(tmp_path / "ds")
    out = tmp_path / "mined.jsonl.gz"
    args = ["mine", "--dataset", str(ds), "--run", str(ds / "run.trec"), "--range", "10:30",
            "--negatives", "5", "--output", str(out)]  # fmt: skip
    res = run_cli(*args, "--teacher", str(bert_dir), "--max-length", "64")
    assert res.returncode == 0, res.stderr
    groups = read(out)
    assert [g["qid"] for g in groups] == ["q0", "q1", "q2", "q3"]
    q0 = groups[0]
    assert sorted(q0["pos_ids"]) == ["d0", "d12"]
    for g in groups:
        ranks = [int(d[1:]) for d in g["neg_ids"]]
        assert len(ranks) == 5 == len(set(ranks))
        assert all(10 <= r < 30 for r in ranks)  # run rank j + 1 -> 0-based index j
        assert not set(g["neg_ids"]) & set(g["pos_ids"])
        assert len(g["pos_scores"]) == len(g["pos"]) and len(g["neg_scores"]) == 5
    again = tmp_path / "again.jsonl.gz"
    assert run_cli(*args[:-2], "--output", str(again)).returncode == 0
    assert [g["neg_ids"] for g in read(again)] == [g["neg_ids"] for g in groups]  # reproducible
    assert len(load_examples(str(out), group_size=4)) == 4  # usable by crossrank train
    res = run_cli(*args[:-2], "--seed", "1", "--output", str(tmp_path / "other.jsonl.gz"))
    assert [g["neg_ids"] for g in read(tmp_path / "other.jsonl.gz")] != [
        g["neg_ids"] for g in groups
    ]


def test_mine_with_bm25_first_stage(tmp_path):
    pytest.importorskip("bm25s")
    ds = tiny_beir(tmp_path / "ds")
    out = tmp_path / "bm25.jsonl.gz"
    res = run_cli("mine", "--dataset", str(ds), "--first-stage", "bm25", "--range", "0:20",
                  "--negatives", "3", "--output", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    groups = read(out)
    assert len(groups) == 4
    for g in groups:
        assert len(g["neg"]) == 3 and not set(g["neg_ids"]) & set(g["pos_ids"])


def test_mine_bad_input_exits_2(tmp_path):
    ds = tiny_beir(tmp_path / "ds")
    (ds / "bad.trec").write_text("q0 Q0 d1 1 9.0 run\nq0 Q0 d2 x\n")
    res = run_cli(
        "mine",
        "--dataset",
        str(ds),
        "--run",
        str(ds / "bad.trec"),
        "--output",
        str(tmp_path / "o.jsonl"),
    )
    assert res.returncode == 2 and "bad.trec:2:" in res.stderr
    res = run_cli(
        "mine",
        "--dataset",
        str(ds),
        "--run",
        str(ds / "run.trec"),
        "--range",
        "5",
        "--output",
        str(tmp_path / "o.jsonl"),
    )
    assert res.returncode == 2 and "--range" in res.stderr
