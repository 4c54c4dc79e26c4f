"""``crossrank verify`` on in-process scorers: statistics, lazy input, tolerances, exit codes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrank.cli import main
from crossrank.errors import InputError
from crossrank.verify.groups import QueryGroup, read_jsonl_groups
from crossrank.verify.runner import detect_scale, verify
from crossrank.verify.scorers import parse_spec
from crossrank.verify.stats import compare_group, kendall_tau, spearman

QUERIES = [
    ("what is panda", ["the giant panda is a bear", "debian is free", "pandas eat bamboo", "hi"]),
    ("debian kernel", ["the linux kernel package", "a bear in china", "debian is free software"]),
    ("free software", ["free software", "bamboo forest", "kernel package", "panda bear", "x"]),
]


def write_queries(path: Path, rows=QUERIES) -> Path:
    with open(path, "w") as f:
        for q, docs in rows:
            f.write(json.dumps({"query": q, "documents": docs}) + "\n")
    return path


class Overlap:
    """A real (if simple) scorer: shared words, as a logit. Not crossrank: a second opinion."""

    remote, scale, batch_size = False, "logit", None

    def __init__(self, name: str = "overlap", shift: float = 0.0, seen: list | None = None):
        self.name, self.shift, self.seen = name, shift, seen

    def score(self, query, documents):
        if self.seen is not None:
            self.seen.append(query)
        q = set(query.split())
        return [len(q & set(d.split())) + 0.01 * len(d) + self.shift for d in documents]

    def describe(self):
        return {"kind": "test"}

    def close(self):
        pass


def test_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 5, 30):
        a = rng.integers(0, 4, n).astype(float)  # ties
        b = a + rng.normal(0, 1, n)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert math.isnan(spearman(np.ones(3), np.arange(3.0)))


def test_compare_group_top_k_and_diffs():
    ref = np.array([3.0, 2.0, 1.0, 0.0])
    c = compare_group(ref, np.array([2.0, 3.0, 1.0, 0.5]))
    assert c.top[1] == 0.0 and c.top[5] == 1.0 and not c.top10_changed
    assert c.max_diff == pytest.approx(1.0) and c.sum_diff == pytest.approx(2.5)
    assert compare_group(ref, ref).spearman == 1.0


def test_scale_detection():
    logits = np.array([-3.0, 0.5, 2.0])
    assert detect_scale(logits) == "logit"
    assert detect_scale(1 / (1 + np.exp(-logits)), logits) == "sigmoid"
    assert detect_scale(np.array([0.2, 0.6, 0.9]), np.array([0.25, 0.55, 0.95])) == "logit"


def test_jsonl_groups_pairs_and_objects(tmp_path):
    f = tmp_path / "in.jsonl"
    rows = [
        {"query": "a", "passage": "x", "doc_id": "d1"},
        {"query": "a", "passage": "y"},
        {"query": "b", "passage": "z", "query_id": "Q"},
        {"query": "c", "documents": ["u", {"text": "v", "id": "V"}]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    groups = list(read_jsonl_groups(str(f)))
    assert [(g.qid, g.doc_ids, g.texts) for g in groups] == [
        ("q1", ("d1", "1"), ("x", "y")),
        ("Q", ("0",), ("z",)),
        ("q3", ("0", "V"), ("u", "v")),
    ]


def test_reader_is_lazy(tmp_path):
    """Groups come out one at a time: a bad line 100000 is reached only when read."""
    f = tmp_path / "big.jsonl"
    with open(f, "w") as out:
        for i in range(100_000):
            out.write(json.dumps({"query": f"q{i}", "documents": ["a", "b"]}) + "\n")
        out.write("{not json\n")
    groups = read_jsonl_groups(str(f))
    assert next(groups).query == "q0" and next(groups).query == "q1"
    with pytest.raises(InputError, match=r"big.jsonl:100001: invalid JSON"):
        for _ in groups:
            pass


def test_verify_streams_with_bounded_window():
    """verify pulls groups only as results complete: at most `window` in flight."""
    pulled = []
    seen: list = []

    def groups():
        for i in range(200):
            pulled.append(i)
            yield QueryGroup(f"q{i}", f"panda {i}", ("a", "b", "c"), ("panda", "bear", f"x {i}"))

    ref = Overlap("ref", seen=seen)
    result = verify(groups(), ref, [Overlap("cand", shift=0.5)], window=3, worst=2)
    # the reference scored query k while at most k + window groups had been read
    assert result.queries == 200 and len(pulled) == 200
    assert len(result.worst["cand"]) == 2
    c = result.candidates[0]
    assert c["max_abs_diff"] == pytest.approx(0.5) and c["spearman"] == pytest.approx(1.0)


def test_verify_window_is_respected():
    pulled = []

    class Watch(Overlap):
        def score(self, query, documents):
            lag.append(len(pulled) - int(query.split()[1]))
            return super().score(query, documents)

    lag: list[int] = []

    def groups():
        for i in range(50):
            pulled.append(i)
            yield QueryGroup(f"q{i}", f"panda {i}", ("a",), ("panda",))

    verify(groups(), Watch("ref"), [Overlap("cand")], window=4)
    assert max(lag) <= 4


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "empty"),
        ("dtype", "not key:value"),
        ("colour:red", "unknown key 'colour'"),
        ("url:http://h:1,api:soap", "api:soap is not one of"),
        ("url:http://h:1,api:tei,backend:onnx", "unknown key 'backend' for a service"),
        ("url:http://h:1,api:tei,batch:0", "batch must be a positive integer"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(InputError, match=match):
        parse_spec(spec)


def test_spec_names():
    assert parse_spec("backend:onnx,quantize:int8").name == "onnx-int8"
    assert parse_spec("x=dtype:bf16").name == "x"
    assert parse_spec("url:http://h:8080/rerank,api:tei").name == "tei@h:8080"


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    return write_queries(tmp_path_factory.mktemp("verify") / "q.jsonl")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossrank", "verify", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_reports_and_tolerance_exit_codes(bert_dir, queries, tmp_path, capsys):
    common = ["-m", str(bert_dir), "--device", "cpu", "--max-length", "64", "-i", str(queries)]
    out, report = tmp_path / "v.json", tmp_path / "v.md"
    code = main(["verify", *common, "-c", "dtype:bf16", "--max-abs-diff", "1e-9",
                 "-o", str(out), "--report", str(report)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 1, text
    assert "tolerance torch-bf16: FAILED: max_abs_diff" in text and "Spearman (mean)" in text
    data = json.loads(out.read_text())
    cand = data["candidates"][0]
    assert data["queries"] == 3 and cand["queries"] == 3 and cand["pairs"] == 12
    assert cand["tolerance_breaches"] and cand["compared_on"] == "logit"
    assert cand["worst_queries"][0]["pairs"]
    assert "| top-10 agreement |" in report.read_text()
    assert "| max \\|diff\\| |" in report.read_text()
    # the same comparison within a loose tolerance passes; fp32 against itself is exact
    assert main(["verify", *common, "-c", "dtype:bf16", "--max-abs-diff", "1"]) == 0
    assert main(["verify", *common, "-c", "same=dtype:fp32", "--max-abs-diff", "0",
                 "--min-spearman", "1", "--min-top1", "1"]) == 0  # fmt: skip
    assert "tolerance same: ok" in capsys.readouterr().out


def test_cli_ndcg_with_beir(bert_dir, tmp_path, capsys):
    data = Path(__file__).parent / "data" / "tiny-beir"
    run = tmp_path / "first.run"
    docs = [json.loads(line)["_id"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    qids = [json.loads(line)["_id"] for line in (data / "queries.jsonl").read_text().splitlines()]
    run.write_text(
        "".join(f"{q} Q0 {d} {r + 1} {10 - r} bm25\n" for q in qids for r, d in enumerate(docs[:6]))
    )
    out = tmp_path / "v.json"
    code = main(["verify", "-m", str(bert_dir), "--device", "cpu", "--max-length", "64",
                 "-d", str(data), "--split", "test", "--run", str(run), "-k", "5",
                 "-c", "dtype:bf16", "-o", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["reference"]["nDCG@10"] is not None
    assert result["candidates"][0]["nDCG@10"] is not None
    assert result["candidates"][0]["reference_nDCG@10"] == pytest.approx(
        result["reference"]["nDCG@10"]
    )
    assert "nDCG@10 (reference" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["-c", "dtype:bf16"], "give the queries with --input"),
        (["-i", "Q"], "at least one --candidate"),
        (["-i", "Q", "-c", "colour:red"], "unknown key 'colour'"),
        (["-i", "BAD", "-c", "dtype:bf16"], "invalid JSON"),
        (["-i", "MISSING", "-c", "dtype:bf16"], "no such file"),
        (["-i", "Q", "-c", "x=dtype:bf16", "-c", "x=dtype:fp32"], "named alike"),
        (["-i", "Q", "-c", "url:http://127.0.0.1:9,api:tei", "--retries", "0"], "cannot connect"),
        (["-i", "Q", "-c", "dtype:bf16", "-o", "/nonexistent/dir/x.json"], "/nonexistent/dir"),
    ],
)
def test_cli_bad_input_exit_2(bert_dir, queries, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "documents": ["x"]}\n{"query": \n')
    subst = {"Q": str(queries), "BAD": str(bad), "MISSING": str(tmp_path / "nope.jsonl")}
    args = [subst.get(a, a) for a in args]
    proc = run_cli("-m", str(bert_dir), "--device", "cpu", "--max-length", "64", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
