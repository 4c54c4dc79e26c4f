"""CLI outputs: atomic (never a partial file, never a lost input, even with -i X -o X),
checked before the model loads, streamed in chunks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.cli import main
from crossrank.testing import WORDS

SRC = Path(__file__).resolve().parent.parent / "src"
TINY_BEIR = Path(__file__).parent / "data" / "tiny-beir"


def rows(n: int) -> list[dict]:
    return [
        {"id": i, "query": f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]}", "passage": " ".join(WORDS[: 1 + i % 9])}
        for i in range(n)
    ]  # fmt: skip


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def one_line_error(capsys, code: int, expected_code: int = 2) -> str:
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_same_file_in_and_out_is_replaced_with_scores(bert_dir, tmp_path, capsys, caplog):
    src = rows(37)
    x = write_jsonl(tmp_path / "x.jsonl", src)
    code = main(["score", "-m", str(bert_dir), "-i", str(x), "-o", str(x), "--chunk-size", "5"])
    assert code == 0, capsys.readouterr().err
    out = [json.loads(line) for line in x.read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "score"} for r in out] == src
    expected = Reranker(bert_dir).compute_score([(r["query"], r["passage"]) for r in src])
    np.testing.assert_allclose([r["score"] for r in out], expected, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]
    summary = [r.getMessage() for r in caplog.records if r.name == "crossrank.scoring"]
    assert summary == [summary[0]] and summary[0].startswith(f"scored 37 pairs into {x} in ")


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_interrupted_run_keeps_its_input(bert_dir, tmp_path, sig, code, said):
    """Ctrl-C, or SIGTERM (what `kill`, systemd and schedulers send), while `crossrank score
    -i X -o X` writes: X is intact, no .tmp-* is left, exit code 128 + the signal."""
    x = write_jsonl(tmp_path / "x.jsonl", rows(20_000))
    before = x.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrank", "score", "-m", str(bert_dir), "-i", str(x),
         "-o", str(x), "--chunk-size", "16", "--batch-size", "1"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"},
        # a shell that runs the tests in the background ignores SIGINT, and Python keeps an
        # ignored SIGINT ignored: give the child the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-x.jsonl-")]
        if temps and temps[0].stat().st_size > 0:  # the first results are written
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"crossrank: {said}"
    assert x.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]


def test_missing_output_directory_fails_before_the_model_loads(bert_dir, tmp_path, capsys):
    """The model's weights are corrupt here: had the model loaded first, that would be the
    error; the output check runs before it, and before any scoring."""
    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    (model / "model.safetensors").write_bytes(b"garbage")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(3))
    missing = tmp_path / "no-such-dir" / "out.jsonl"
    line = one_line_error(
        capsys, main(["score", "-m", str(model), "-i", str(pairs), "-o", str(missing)])
    )
    assert f"{missing}: directory {missing.parent} does not exist" in line
    line = one_line_error(
        capsys, main(["score", "-m", str(model), "-i", str(pairs), "-o", str(tmp_path)])
    )
    assert "--output is a directory" in line
    docs = tmp_path / "docs.txt"
    docs.write_text("a\nb\n")
    line = one_line_error(
        capsys, main(["rank", "-m", str(model), "-q", "q", "-d", str(docs), "-o", str(missing)])
    )
    assert "does not exist" in line
    line = one_line_error(
        capsys, main(["eval", "-d", str(TINY_BEIR), "-s", "test", "--report", str(missing)])
    )
    assert f"{missing}: directory" in line and "choose another --report" in line
    line = one_line_error(capsys, main(["mine", "--dataset", str(TINY_BEIR), "-o", str(missing)]))
    assert "does not exist" in line
    assert not missing.parent.exists()
    # and the chunk size is checked first too
    line = one_line_error(
        capsys, main(["score", "-m", str(model), "-i", str(pairs), "--chunk-size", "0"])
    )
    assert "--chunk-size must be >= 1" in line
    # with a fine output, the corrupt weights are what fails
    line = one_line_error(capsys, main(["score", "-m", str(model), "-i", str(pairs)]))
    assert "model.safetensors" in line


def test_rank_output_file_and_stdout(bert_dir, tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("\ufeffhi\r\nThe giant panda is a bear.\r\nDebian is free.\r\n")  # BOM, CRLF
    out = tmp_path / "ranked.jsonl"
    assert (
        main(
            ["rank", "-m", str(bert_dir), "-q", "panda", "-d", str(docs), "--json", "-o", str(out)]
        )
        == 0
    )
    ranked = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["text"] for r in ranked) == sorted(
        ["hi", "The giant panda is a bear.", "Debian is free."]
    )
    assert capsys.readouterr().out == ""
    assert main(["rank", "-m", str(bert_dir), "-q", "panda", "-d", str(docs), "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == ranked


def test_stdout_streams_and_gz_input(bert_dir, tmp_path, capsys):
    import gzip

    src = rows(11)
    gz = tmp_path / "pairs.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in src)
    assert main(["score", "-m", str(bert_dir), "-i", str(gz), "--chunk-size", "3"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in out] == list(range(11))
