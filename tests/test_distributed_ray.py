"""Batch reranking on Ray Data, on a real local Ray cluster started once for this module.

Scores are compared with the in-process :class:`~crossrank.Reranker` (batch composition moves
fp32 scores by ~1e-6, hence 1e-4); the CLI runs in this process (joining the cluster) and in a
subprocess that joins it by address; the fault test kills the replica's process mid-job.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from crossrank import Reranker
from crossrank.cli import main
from crossrank.distributed.ray_data import (
    RayReranker,
    rerank_dataset,
)
from crossrank.errors import InputError
from crossrank.hub import BUNDLED_MODEL

SRC = Path(__file__).resolve().parent.parent / "src"
TINY_BEIR = Path(__file__).parent / "data" / "tiny-beir"
WORKER_TITLE = "ray::MapWorker(MapBatches(RerankerUDF))"

QUERIES = ["what is panda?", "Debian package manager", "Wie heißt die Hauptstadt?"]
PASSAGES = [
    "The giant panda is a bear species endemic to China.",
    "apt installs packages on Debian; dpkg is the low-level tool.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "search engines rank documents; cross-encoders rescore the top hundred candidates",
    "hi",
]


def rows(n: int) -> list[dict]:
    """Pairs with extra fields of several types (kept as they are through the job)."""
    return [
        {
            "id": i,
            "query": QUERIES[i % len(QUERIES)],
            "passage": PASSAGES[i % len(PASSAGES)] * (1 + i % 3),
            "tag": None if i % 4 else f"t{i}",
            "meta": {"source": "test", "n": [i, i + 1]},
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (the CLI joins it instead of starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def in_process(model, data: list[dict], **options) -> list[float]:
    rr = Reranker(str(model), device="cpu", show_progress=False, **options)
    return rr.compute_score([(r["query"], r["passage"]) for r in data])


def by_id(records: list[dict]) -> dict[int, dict]:
    out = {r["id"]: r for r in records}
    assert len(out) == len(records), "a row came back twice"
    return out


def test_encoder_scores_and_columns(cluster, bert_dir):
    data = rows(40)
    ds = ray.data.from_items(data)
    chunks = {"max_chunks_per_doc": 3, "chunk_overlap": 4}  # long passages: best of 3 windows
    scored = rerank_dataset(ds, model=bert_dir, batch_size=7, max_length=32, score_options=chunks)
    got = by_id(scored.take_all())
    rr = Reranker(str(bert_dir), device="cpu", max_length=32)
    expected = rr.compute_score([(r["query"], r["passage"]) for r in data], **chunks)
    assert expected != rr.compute_score([(r["query"], r["passage"]) for r in data])
    assert sorted(got) == list(range(40))
    for r, score in zip(data, expected):
        out = dict(got[r["id"]])
        assert out.pop("score") == pytest.approx(score, abs=1e-4)
        assert out == r  # every input column, unchanged


def test_llm_family_with_column_names(cluster, gemma_dir):
    data = [{"id": r["id"], "q": r["query"], "doc": r["passage"]} for r in rows(12)]
    ds = ray.data.from_items(data)
    scored = rerank_dataset(
        ds,
        model=gemma_dir,
        batch_size=5,
        query_column="q",
        passage_column="doc",
        score_column="relevance",
        max_length=96,
        prompt="Is B relevant to A?",
    )
    got = by_id(scored.take_all())
    rr = Reranker(str(gemma_dir), device="cpu", max_length=96, prompt="Is B relevant to A?")
    assert rr.family.name == "gemma"
    expected = rr.compute_score([(r["q"], r["doc"]) for r in data])
    for r, score in zip(data, expected):
        assert got[r["id"]]["relevance"] == pytest.approx(score, abs=1e-4)
        assert {k: v for k, v in got[r["id"]].items() if k != "relevance"} == r


def test_library_bad_row_is_an_input_error(cluster, bert_dir):
    # Ray Data reports a UDF's error as a UserCodeException; RayReranker unwraps it (user_error)
    with pytest.raises(InputError) as info:
        RayReranker(str(bert_dir), max_length=64).compute_score([("q", "p"), ("q", None)])
    assert type(info.value) is InputError  # one line, no remote traceback
    assert str(info.value) == "row 1 of a batch: missing string field 'passage'"


def score_cli(*args) -> int:
    return main(["score", "--engine", "ray", *map(str, args)])


def test_cli_jsonl_gz_glob_to_jsonl(cluster, bert_dir, tmp_path, capsys):
    data = rows(30)
    for part, chunk in enumerate((data[:17], data[17:])):
        with gzip.open(tmp_path / f"part{part}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk)
    out = tmp_path / "scored"
    code = score_cli(
        "--input", tmp_path / "part*.jsonl.gz", "--output", out, "--output-format", "jsonl",
        "-m", bert_dir, "--max-length", "64", "--ray-batch-size", "8",
    )  # fmt: skip
    assert code == 0
    assert "crossrank: 30 rows in " in capsys.readouterr().err
    lines = [json.loads(x) for p in sorted(out.iterdir()) for x in p.read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(30))  # input order kept
    for r, score, got in zip(data, in_process(bert_dir, data, max_length=64), lines):
        assert got.pop("score") == pytest.approx(score, abs=1e-4)
        assert got == r
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def test_cli_parquet_to_parquet_keeps_types(cluster, bert_dir, tmp_path):
    data = rows(25)
    table = pa.Table.from_pylist(data).set_column(0, "id", pa.array(range(25), type=pa.int32()))
    pq.write_table(table, tmp_path / "pairs.parquet")
    out = tmp_path / "out"
    code = score_cli(
        "--input", tmp_path / "pairs.parquet", "--output", out, "-m", bert_dir,
        "--max-length", "64", "--normalize",
    )  # fmt: skip
    assert code == 0
    result = pq.read_table(out)
    assert result.schema.names == [*table.schema.names, "score"]
    assert result.drop_columns(["score"]).equals(table)  # every field, with its Arrow type
    expected = in_process(bert_dir, data, max_length=64, normalize=True)
    assert result.column("score").to_pylist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_cli_bad_row_names_file_and_row(cluster, bert_dir, tmp_path, capsys, fmt):
    data = rows(9)
    if fmt == "jsonl":
        data[6]["query"] = 42
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
        where = f"{path}:7: missing string field 'query'"
    else:
        data[6]["passage"] = None
        path = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(data), path)
        where = f"{path}: row 7: missing string field 'passage'"
    code = score_cli("--input", path, "--output", tmp_path / "out", "-m", bert_dir)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"crossrank: error: {where}"
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def test_cli_subprocess_local_ray_bad_row_exit_2(cluster, bert_dir, tmp_path):
    """No --ray-address: the command starts (and stops) its own local Ray."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"query": "q", "passage": "p"}\n{"query": "q"}\n')
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "crossrank", "score", "--engine", "ray", "--input", str(path),
         "--output", str(tmp_path / "out"), "-m", str(bert_dir)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.endswith(f"crossrank: error: {path}:2: missing string field 'passage'\n")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def worker_pids() -> set[int]:
    """PIDs of this cluster's reranker actors (Ray names their processes after the UDF)."""
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.cmdline() and p.cmdline()[0].startswith(WORKER_TITLE):
                pids.add(p.pid)
        except psutil.Error:
            continue
    return pids


def test_killed_replica_is_restarted_nothing_lost(cluster, tmp_path):
    data = rows(240)
    ds = ray.data.from_items(data)
    scored = rerank_dataset(ds, model=BUNDLED_MODEL, replicas=1, batch_size=8, max_length=128)
    got, killed = [], None
    earlier = worker_pids()  # actors of earlier jobs still shutting down
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        got.extend(batch.to_pylist())
        if killed is None:  # some batches are done: kill the only replica
            pids = worker_pids() - earlier
            assert len(pids) == 1, pids
            killed = pids.pop()
            process = psutil.Process(killed)
            os.kill(killed, signal.SIGKILL)
            process.wait(timeout=30)
            done_before = len(got)
    assert killed is not None and not psutil.pid_exists(killed)
    assert done_before < len(data), "the job ended before the replica was killed"
    out = by_id(got)
    assert sorted(out) == list(range(len(data)))  # every row exactly once
    expected = in_process(BUNDLED_MODEL, data, max_length=128)
    for r, score in zip(data, expected):
        assert out[r["id"]]["score"] == pytest.approx(score, abs=1e-4)


def test_eval_engine_ray_same_metrics(cluster, bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    common = [
        "eval", "--dataset", str(TINY_BEIR), "--split", "test", "-m", str(bert_dir),
        "--top-k", "5", "--max-queries", "6", "--seed", "1", "--max-length", "64",
    ]  # fmt: skip
    assert main([*common, "-o", str(tmp_path / "local.json")]) == 0
    assert main([*common, "--engine", "ray", "-o", str(tmp_path / "ray.json")]) == 0
    local = json.loads((tmp_path / "local.json").read_text())
    on_ray = json.loads((tmp_path / "ray.json").read_text())
    assert on_ray["queries"] == local["queries"] == 6
    assert on_ray["models"] == local["models"]
    assert on_ray["first_stage"] == local["first_stage"]


def test_cli_unreachable_ray_address_exit_2(bert_dir, tmp_path):
    """A HOST:PORT with no Ray head is one line at once (ray.init would retry for minutes)."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"query": "q", "passage": "p"}\n')
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "crossrank", "score", "--engine", "ray", "--ray-address",
         f"127.0.0.1:{port}", "--input", str(path), "--output", str(tmp_path / "out"),
         "-m", str(bert_dir)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == (
        f"crossrank: error: --ray-address 127.0.0.1:{port}: no Ray head answers there "
        "(Connection refused)\n"
    )
