"""The rough edges of the CLI (issue 33): progress per batch on a terminal and never in logs,
input files parsed before the model loads, a stream that fails says how much it wrote (SIGTERM
leaving no temporary: test_cli_outputs.py, beside Ctrl-C)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

from crossrank.cli import main
from crossrank.testing import WORDS, write_groups

SRC = Path(__file__).resolve().parent.parent / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def rows(n: int) -> list[dict]:
    return [
        {
            "id": i,
            "query": f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]}",
            "passage": " ".join(WORDS[: 1 + i % 9]) + f" {i}",
        }
        for i in range(n)
    ]  # fmt: skip  (distinct pairs: no two are scored as one)


def write_jsonl(path: Path, items: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items) + tail)
    return path


def score_cmd(model: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "crossrank", "score", "-m", str(model), *args]


def on_a_terminal(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal; its exit code and what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), out.decode(errors="replace")


def test_score_progress_moves_per_batch_on_a_terminal_and_is_absent_from_logs(bert_dir, tmp_path):
    """2,000 pairs are one chunk of the default 4,096: the bar must still move as the batches
    are scored (it moved once per chunk: 0, then 2000)."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(2000))
    cmd = score_cmd(bert_dir, "-i", str(pairs), "-o", str(tmp_path / "out.jsonl"))
    cmd += ["--batch-size", "100"]
    env = {**ENV, "TQDM_MININTERVAL": "0"}  # draw every update: the test sees each one
    code, drawn = on_a_terminal(cmd, env)
    assert code == 0, drawn
    counts = {int(m) for m in re.findall(r"(\d+)/2000", drawn)}
    assert 2000 in counts, drawn
    assert len(counts - {0, 2000}) >= 3, sorted(counts)
    # the same command into a log file: no bar, no carriage returns
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=env)
    assert done.returncode == 0, log.read_text()
    assert "\r" not in log.read_text() and "/2000" not in log.read_text()


def test_train_progress_is_absent_from_logs(bert_dir, tmp_path, capsys):
    """`crossrank train` on a non-terminal stderr (a log): no tqdm redraws."""
    data = write_groups(tmp_path / "d.jsonl")
    args = ["train", "-m", str(bert_dir), "--data", data, "--output", str(tmp_path / "o")]
    args += ["--group-size", "4", "--batch-size", "2", "--max-steps", "2", "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "training:" not in err, err


def test_bad_last_line_fails_before_the_model_loads(bert_dir, tmp_path, capsys):
    """The whole input is parsed before any scoring: the model's weights are corrupt here, so
    had the model loaded (and scored the first 4,096 pairs), that would be the error."""
    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    (model / "model.safetensors").write_bytes(b"garbage")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(5000), '{"query": "q"}\n')
    out = tmp_path / "out.jsonl"
    out.write_text("old results\n")
    code = main(["score", "-m", str(model), "-i", str(pairs), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"crossrank: error: {pairs}:5001: missing string field 'passage'"
    assert out.read_text() == "old results\n"


def test_stdin_error_says_how_many_result_lines_were_written(bert_dir):
    """stdin cannot be read twice: the error names the line and the results already out."""
    text = "".join(json.dumps(r) + "\n" for r in rows(12)) + "not json\n"
    done = subprocess.run(
        score_cmd(bert_dir, "-i", "-", "--chunk-size", "5"),
        input=text,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stdout.splitlines()) == 10  # two chunks of 5 scored before line 13
    assert done.stderr.strip().splitlines()[-1] == (
        "crossrank: error: -:13: invalid JSON (Expecting value); 10 result lines were written "
        "to stdout before it: they are not the whole result"
    )
