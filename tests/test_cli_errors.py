"""Every class of bad input answers with one line naming the file (and line, or byte offset
for binary files) and the fix, exit 2; a full disk is one line too (exit 1). In-process
``crossrank.cli.main`` calls: no interpreter start per case."""

from __future__ import annotations

import errno
import gzip
import shutil
from pathlib import Path

import pytest

from crossrank.cli import describe_os_error, main
from crossrank.errors import CrossrankError

TINY_BEIR = Path(__file__).parent / "data" / "tiny-beir"
PAIR = b'{"query": "what is panda?", "passage": "The giant panda is a bear."}\n'


def error_line(capsys, argv: list[str], code: int = 2) -> str:
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("crossrank: error: ")
    return lines[0]


def test_invalid_utf8_in_inputs_names_line_and_byte(bert_dir, tmp_path, capsys):
    bad = tmp_path / "pairs.jsonl"
    bad.write_bytes(PAIR + PAIR + b'{"query": "caf\xe9", "passage": "x"}\n')
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", bad])
    assert f"{bad}:3: invalid UTF-8 at byte 15 of the line (offset {2 * len(PAIR) + 14}" in line
    assert line.endswith("save the file as UTF-8")

    docs = tmp_path / "docs.txt"
    docs.write_bytes(b"fine\n\xff\xfe broken\n")
    line = error_line(capsys, ["rank", "-m", bert_dir, "-q", "q", "-d", docs])
    assert f"{docs}:2: invalid UTF-8 at byte 1 of the line" in line

    gz = tmp_path / "pairs.jsonl.gz"
    gz.write_bytes(gzip.compress(PAIR + b'{"query": "\xc3", "passage": "x"}\n'))
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", gz])
    assert f"{gz}:2: invalid UTF-8" in line and "of the decompressed data" in line


def test_truncated_and_fake_gzip(bert_dir, tmp_path, capsys):
    data = gzip.compress(PAIR * 2000)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(data[: len(data) // 2])
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", truncated])
    assert f"{truncated}: truncated gzip file: the compressed data ends after line" in line
    assert not list(tmp_path.glob(".tmp-*"))

    fake = tmp_path / "plain.jsonl.gz"
    fake.write_bytes(PAIR)
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", fake])
    assert f"{fake}: not a valid gzip file" in line and "drop the .gz suffix" in line

    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", corrupt])
    assert f"{corrupt}: not a valid gzip file" in line


def test_input_is_a_directory(bert_dir, tmp_path, capsys):
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", tmp_path])
    assert f"{tmp_path}: is a directory, not a file" in line


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("half", "truncated safetensors file: the tensor data should end at byte"),
        ("header", "truncated or not a safetensors file: the header should span bytes 8-"),
        ("tiny", "truncated safetensors file: it ends at byte 3"),
        ("json", "corrupt safetensors file: the header (bytes 8-"),
    ],
)
def test_truncated_or_corrupt_safetensors(damage, message, bert_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    weights.write_bytes(
        {
            "half": data[: len(data) // 2],
            "header": data[: 8 + n // 2],
            "tiny": data[:3],
            "json": data[:8] + b"{" * n + data[8 + n :],
        }[damage]
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(PAIR)
    line = error_line(capsys, ["score", "-m", model, "-i", pairs])
    assert f"{weights}: {message}" in line
    assert line.endswith("re-download the model or save the checkpoint again")


def test_corrupt_pytorch_bin(bert_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(PAIR)
    line = error_line(capsys, ["score", "-m", model, "-i", pairs])
    assert f"{model / 'pytorch_model.bin'}: corrupt PyTorch weight file (" in line
    assert line.endswith("re-download the model or save the checkpoint again")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "expected a JSON object ({...}) of model settings, got list"),
        (b'"BertForSequenceClassification"', "got str"),
        (b'{"architectures": [}', "is not valid JSON (Expecting value at line 1 column 20)"),
        (b'{"a": "\xff"}', "is not valid UTF-8 (byte offset 7)"),
    ],
)
def test_config_json_not_an_object(content, message, bert_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    (model / "config.json").write_bytes(content)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(PAIR)
    line = error_line(capsys, ["score", "-m", model, "-i", pairs])
    assert f"{model / 'config.json'}" in line and message in line


def test_full_disk_on_output_is_one_line(bert_dir, tmp_path, capsys):
    """/dev/full answers every write with ENOSPC: one line naming the output, exit 1 (the
    machine's problem, not a mistake in the command)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(PAIR * 3)
    line = error_line(capsys, ["score", "-m", bert_dir, "-i", pairs, "-o", "/dev/full"], code=1)
    assert line == (
        "crossrank: error: /dev/full: no space left on device; "
        "free some space or write to another disk"
    )


def test_os_errors_on_paths_are_exit_2():
    assert describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/out/x")) == (
        "/out/x: permission denied; check the permissions or choose another location",
        2,
    )
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/x"))[1] == 2
    assert describe_os_error(OSError(errno.EIO, "Input/output error"))[1] == 1


def beir_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "beir"
    shutil.copytree(TINY_BEIR, dst)
    return dst


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        (b"inf", "relevance 'inf' is not an integer grade (0, 1, 2...)"),
        (b"nan", "relevance 'nan' is not an integer grade"),
        (b"0.5", "relevance '0.5' is not an integer grade"),
    ],
)
def test_qrels_relevance_must_be_an_integer(rel, message, tmp_path, capsys):
    ds = beir_copy(tmp_path)
    qrels = ds / "qrels" / "test.tsv"
    lines = qrels.read_bytes().splitlines(keepends=True)
    fields = lines[2].split()
    lines[2] = b"\t".join([*fields[:-1], rel]) + b"\n"
    qrels.write_bytes(b"".join(lines))
    line = error_line(capsys, ["eval", "-d", ds, "-s", "test"])
    assert f"{qrels}:3: {message}" in line


def test_qrels_invalid_utf8_and_run_scores(tmp_path, capsys):
    ds = beir_copy(tmp_path)
    qrels = ds / "qrels" / "test.tsv"
    qrels.write_bytes(qrels.read_bytes() + b"q\xe91\td1\t1\n")
    n = len(qrels.read_bytes().splitlines())
    line = error_line(capsys, ["eval", "-d", ds, "-s", "test"])
    assert f"{qrels}:{n}: invalid UTF-8 at byte 2 of the line" in line

    ds = beir_copy(tmp_path / "again")
    run = tmp_path / "first.run"
    run.write_text("q1 Q0 d1 1 nan bm25\n")
    line = error_line(capsys, ["eval", "-d", ds, "-s", "test", "--run", run])
    assert f"{run}:1: score 'nan' is not a finite number" in line
    run.write_bytes(b"q1 Q0 d\xff 1 2.0 bm25\n")
    line = error_line(capsys, ["eval", "-d", ds, "-s", "test", "--run", run])
    assert f"{run}:1: invalid UTF-8" in line


def test_corpus_utf8_and_truncated_gz(tmp_path, capsys):
    ds = beir_copy(tmp_path)
    corpus = ds / "corpus.jsonl"
    data = corpus.read_bytes()
    corpus.unlink()
    (ds / "corpus.jsonl.gz").write_bytes(gzip.compress(data)[:-30])
    line = error_line(capsys, ["eval", "-d", ds, "-s", "test"])
    assert f"{ds / 'corpus.jsonl.gz'}: truncated gzip file" in line


def test_library_raises_crossrank_errors(bert_dir, tmp_path):
    from crossrank import Reranker
    from crossrank.eval.beir import read_qrels

    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    (model / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CrossrankError, match="truncated safetensors file"):
        Reranker(model, device="cpu")
    qrels = tmp_path / "q.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\tinf\n")
    with pytest.raises(CrossrankError, match="q.tsv:2: relevance 'inf'"):
        read_qrels(qrels)
    qrels.write_text("q1\td1\t2\nq1\td2\t1.0\n")
    assert read_qrels(qrels) == {"q1": {"d1": 2, "d2": 1}}
    (tmp_path / "list.json").write_text("[]")
    from crossrank.config import read_config

    with pytest.raises(CrossrankError, match="expected a JSON object"):
        read_config(tmp_path / "list.json")
