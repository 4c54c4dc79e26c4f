"""The CLI through a subprocess, as users run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrank import Reranker


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "crossrank", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def assert_usage_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "pairs.jsonl"
    rows = [
        {"query": "what is panda?", "passage": "The giant panda is a bear.", "id": "a"},
        {"query": "what is panda?", "passage": "hi"},
        {"query": "Москва", "passage": "Москва — столица России.", "extra": [1, 2]},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_score_file_to_file_keeps_fields_and_order(xlmr_dir, pairs_file, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = run("score", "--model", str(xlmr_dir), "--input", str(pairs_file), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    src = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "score"} for r in rows] == src
    expected = Reranker(xlmr_dir).compute_score([(r["query"], r["passage"]) for r in src])
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-5)


def test_score_stdin_stdout_normalize(bert_dir, pairs_file):
    proc = run("score", "-m", str(bert_dir), "-i", "-", "--normalize", "--max-length", "32",
               stdin=pairs_file.read_text())  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    scores = [json.loads(line)["score"] for line in proc.stdout.splitlines()]
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)
    expected = Reranker(bert_dir, max_length=32, normalize=True).compute_score(
        [
            (json.loads(x)["query"], json.loads(x)["passage"])
            for x in pairs_file.read_text().splitlines()
        ]
    )
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_rank_table_and_json(xlmr_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    texts = ["hi", "The giant panda is a bear species endemic to China.", "Debian is free."]
    docs.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)))
    proc = run(
        "rank", "-m", str(xlmr_dir), "-q", "what is panda?", "-d", str(docs), "--json", "-k", "2"
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    ranked = Reranker(xlmr_dir).rank("what is panda?", texts, top_k=2)
    assert [r["index"] for r in rows] == [r.index for r in ranked]
    assert [r["id"] for r in rows] == [f"d{r.index}" for r in ranked]
    assert [r["rank"] for r in rows] == [1, 2]

    plain = tmp_path / "docs.txt"
    plain.write_text("\n".join(texts) + "\n")
    proc = run("rank", "-m", str(xlmr_dir), "-q", "what is panda?", "-d", str(plain))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "text"]
    assert len(lines) == 4
    assert texts[ranked[0].index][:20] in lines[1]


def test_bad_inputs_exit_2_with_one_line(xlmr_dir, tmp_path, pairs_file):
    m = str(xlmr_dir)
    assert_usage_error(run("score", "-m", m, "-i", str(tmp_path / "missing.jsonl")), "no such file")

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"query": "a", "passage": "b"}\n\n{"query": "a", passage}\n')
    assert_usage_error(run("score", "-m", m, "-i", str(bad_json)), "bad.jsonl:3: invalid JSON")

    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"query": "a", "passage": "b"}\n{"query": "a"}\n')
    assert_usage_error(
        run("score", "-m", m, "-i", str(no_field)),
        "nofield.jsonl:2: missing string field 'passage'",
    )

    not_obj = tmp_path / "list.jsonl"
    not_obj.write_text("[1, 2]\n")
    assert_usage_error(run("score", "-m", m, "-i", str(not_obj)), "expected a JSON object")

    docs_bad = tmp_path / "docs.jsonl"
    docs_bad.write_text('{"text": "fine"}\n{"id": 3}\n')
    assert_usage_error(
        run("rank", "-m", m, "-q", "x", "-d", str(docs_bad)),
        "docs.jsonl:2: missing string field 'text'",
    )

    no_config = tmp_path / "noconfig"
    no_config.mkdir()
    assert_usage_error(run("score", "-m", str(no_config), "-i", str(pairs_file)), "no config.json")

    unsupported = tmp_path / "t5"
    shutil.copytree(xlmr_dir, unsupported)
    cfg = json.loads((unsupported / "config.json").read_text())
    cfg["architectures"] = ["T5ForConditionalGeneration"]
    (unsupported / "config.json").write_text(json.dumps(cfg))
    assert_usage_error(
        run("score", "-m", str(unsupported), "-i", str(pairs_file)), "unsupported architecture"
    )

    assert_usage_error(
        run("score", "-m", m, "-i", str(pairs_file), "--dtype", "fp16", "--device", "cpu"), "fp16"
    )
    assert_usage_error(
        run("rank", "-m", m, "-q", "x", "-d", str(pairs_file), "-k", "-1"), "--top-k"
    )
    assert_usage_error(run("score", "-m", m), "--input")
    assert_usage_error(
        run("score", "-m", "/nonexistent/model", "-i", str(pairs_file)), "does not exist"
    )


def test_version_and_help():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("crossrank ")
    proc = run("--help")
    assert proc.returncode == 0 and "score" in proc.stdout and "rank" in proc.stdout


def test_missing_extra_is_one_line_naming_the_install(xlmr_dir, pairs_file, tmp_path):
    """Without onnxruntime, --backend onnx says which pip install brings it (exit 2)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "crossrank", "score", "-m", str(xlmr_dir), "-i", str(pairs_file),
         "--backend", "onnx"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert_usage_error(proc, "pip install 'crossrank[onnx]'")


def test_default_model_is_v2_m3_with_a_clear_offline_error(tmp_path):
    """No --model means BAAI/bge-reranker-v2-m3 (CLI, server, library); when it is neither
    cached nor downloadable, one line says so and names the bundled offline model."""
    import inspect

    from crossrank.cli import build_parser
    from crossrank.hub import DEFAULT_MODEL

    assert DEFAULT_MODEL == "BAAI/bge-reranker-v2-m3"
    assert inspect.signature(Reranker.__init__).parameters["model"].default == DEFAULT_MODEL
    assert (
        build_parser().parse_args(["rank", "--query", "q", "--documents", "-"]).model
        == DEFAULT_MODEL
    )
    assert build_parser().parse_args(["serve"]).model == DEFAULT_MODEL
    docs = tmp_path / "docs.txt"
    docs.write_text("a document\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "crossrank", "rank", "--query", "q", "--documents", str(docs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_usage_error(proc, "'BAAI/bge-reranker-v2-m3'")
    assert "--model crossrank/minilm-debian" in proc.stderr
    assert "'crossrank/minilm-debian', English only" in proc.stderr  # its language, offered


def test_rank_table_columns_align_with_long_ids(bert_dir, tmp_path, capsys):
    from crossrank.cli import main

    ids = ["a", "a-rather-long-document-id", "the-longest-document-identifier-here"]
    texts = ["the giant panda", "a bear", "pandas eat bamboo"]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    assert main(["rank", "-m", str(bert_dir), "-q", "panda", "-d", str(docs)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3
    starts = {header.index("text")}
    for row in rows:
        shown = next(t for t in texts if row.endswith(t))
        starts.add(len(row) - len(shown))
    assert len(starts) == 1, [header, *rows]  # the text column starts at one offset
