"""BEIR loader, query sampling and TREC run files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from crossrank.errors import InputError
from crossrank.eval.beir import load_beir, sample_queries
from crossrank.eval.runs import read_run, top_candidates, write_run

TINY = Path(__file__).parent / "data" / "tiny-beir"


def test_load_tiny_dataset():
    ds = load_beir(TINY, "test")
    assert len(ds.corpus) == 16
    assert ds.corpus["d1"].startswith("vim Vi IMproved is")  # "title text"
    assert ds.corpus["d8"].startswith("Mercurial is")  # empty title: text only
    assert list(ds.queries) == [f"q{i}" for i in range(1, 11)]  # q11 is in no split
    assert ds.qrels["q1"] == {"d1": 2, "d2": 1}
    assert ds.qrels["q7"] == {"d14": 1, "d13": 0}
    dev = load_beir(TINY, "dev")
    assert set(dev.queries) == {"q1", "q2", "q3", "q5"}
    assert "dev" in repr(dev) and dev.name == "tiny-beir"


def test_gzipped_files(tmp_path):
    for name in ("corpus.jsonl", "queries.jsonl"):
        with open(TINY / name, "rb") as src, gzip.open(tmp_path / (name + ".gz"), "wb") as dst:
            dst.write(src.read())
    (tmp_path / "qrels").mkdir()
    with gzip.open(tmp_path / "qrels" / "test.tsv.gz", "wb") as dst:
        dst.write((TINY / "qrels" / "test.tsv").read_bytes())
    ds = load_beir(tmp_path, "test")
    plain = load_beir(TINY, "test")
    assert ds.corpus == plain.corpus and ds.queries == plain.queries and ds.qrels == plain.qrels


@pytest.fixture()
def copy(tmp_path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(TINY, dst)
    return dst


def test_missing_split_names_the_available_ones(copy):
    with pytest.raises(InputError, match=r"no qrels for split 'train'.*available: dev, test"):
        load_beir(copy, "train")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: (d / "corpus.jsonl").write_text(""), "corpus is empty"),
        (lambda d: (d / "corpus.jsonl").unlink(), "no corpus.jsonl"),
        (
            lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"),
            "no relevance",
        ),
        (
            lambda d: (d / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n'),
            "not in queries",
        ),
        (
            lambda d: (d / "corpus.jsonl").write_text(
                '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n'
            ),
            "corpus.jsonl:2: duplicate",
        ),
        (
            lambda d: (d / "corpus.jsonl").write_text('{"_id": "a"}\n'),
            "corpus.jsonl:1: missing string field 'text'",
        ),
        (
            lambda d: (d / "corpus.jsonl").write_text('{"_id": "a", "text": "x"\n'),
            "corpus.jsonl:1: invalid JSON",
        ),
        (
            lambda d: (d / "qrels" / "test.tsv").write_text("h h h\nq1 d1 yes\n"),
            "test.tsv:2: relevance",
        ),
    ],
)
def test_bad_datasets(copy, edit, message):
    edit(copy)
    with pytest.raises(InputError, match=message):
        load_beir(copy, "test")


def test_not_a_directory(tmp_path):
    with pytest.raises(InputError, match="no such dataset directory"):
        load_beir(tmp_path / "nope", "test")


def test_sample_is_reproducible():
    ids = [f"q{i}" for i in range(100)]
    a = sample_queries(ids, 10, seed=3)
    assert a == sample_queries(reversed(ids), 10, seed=3)  # input order does not matter
    assert len(a) == 10 and len(set(a)) == 10 and a == sorted(a)
    assert a != sample_queries(ids, 10, seed=4)
    assert sample_queries(ids, 1000) == sorted(ids)
    with pytest.raises(InputError):
        sample_queries(ids, 0)


def test_run_round_trip_and_order(tmp_path):
    run = {"q1": {"d1": 1.5, "d2": 3.25, "d3": 1.5}, "q2": {"d9": -0.1234567891234}}
    path = tmp_path / "out.run"
    write_run(run, path, tag="my model")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 3.25 my_model"
    assert [ln.split()[2] for ln in lines[:3]] == ["d2", "d3", "d1"]  # ties: doc id desc
    assert read_run(path) == run  # scores survive exactly
    assert top_candidates(run, 2) == {"q1": ["d2", "d3"], "q2": ["d9"]}
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "q1 Q0 d1 1 2.0 t\nq1 Q0 nope 2 1.0 t\n",
            r"bad\.run:2: document 'nope' is not in the corpus",
        ),
        ("q1 Q0 d1 1 2.0\n", r"bad\.run:1: expected 'qid Q0 docid rank score tag'"),
        ("q1 Q0 d1 1 high t\n", r"bad\.run:1: score 'high'"),
        ("q1 Q0 d1 1 2 t\nq1 Q0 d1 2 1 t\n", r"bad\.run:2: document 'd1' listed twice"),
        ("\n", "the run is empty"),
    ],
)
def test_bad_runs(tmp_path, text, message):
    path = tmp_path / "bad.run"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_run(path, doc_ids={"d1", "d2"})
