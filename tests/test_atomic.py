"""crossrank.atomic: files and directories appear complete or not at all; stale temporaries
of dead processes are removed; output locations are checked before any work."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crossrank.atomic import (
    atomic_dir,
    atomic_files,
    atomic_path,
    atomic_write,
    atomic_write_text,
    check_output,
    remove_stale_temporaries,
    temp_name,
)
from crossrank.errors import OutputError

SRC = Path(__file__).resolve().parent.parent / "src"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((".tmp-", ".old-")))


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=-1)
    return int(proc.stdout)


def test_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old content\n")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half of the new")
        raise RuntimeError("failed mid-write")
    assert target.read_text() == "old content\n"
    assert leftovers(tmp_path) == []

    with pytest.raises(KeyboardInterrupt), atomic_write(target) as fh:
        fh.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old content\n"
    assert leftovers(tmp_path) == []

    with atomic_write(target) as fh:
        fh.write("new\r\ncontent é\n")
        assert target.read_text() == "old content\n"  # not visible before the end
        assert len(leftovers(tmp_path)) == 1
    assert target.read_bytes() == "new\r\ncontent é\n".encode()  # no newline translation
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the target keeps its mode
    assert leftovers(tmp_path) == []


def test_new_file_mode_compress_bytes_and_path(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
    finally:
        os.umask(umask)
    with atomic_write(tmp_path / "g.jsonl.gz", compress=True) as fh:
        fh.write('{"a": 1}\n')
    with gzip.open(tmp_path / "g.jsonl.gz", "rt") as fh:
        assert fh.read() == '{"a": 1}\n'
    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    with atomic_path(tmp_path / "p.json") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-p.json-")
        tmp.write_text("{}")
    assert (tmp_path / "p.json").read_text() == "{}"
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "new.txt")
    atomic_write_text(link, "through the link")
    assert link.is_symlink() and (tmp_path / "new.txt").read_text() == "through the link"
    assert leftovers(tmp_path) == []


def test_special_files_are_written_in_place():
    """/dev/null is written, not replaced (renaming over it would replace the device)."""
    with atomic_write("/dev/null") as fh:
        fh.write("discarded\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_full_disk_names_the_target():
    with pytest.raises(OSError) as info, atomic_write("/dev/full") as fh:
        fh.write("x" * 100)
    assert info.value.errno == 28 and info.value.filename == "/dev/full"


def test_file_size_limit_leaves_the_target_intact(tmp_path):
    """A write refused by the kernel (here RLIMIT_FSIZE, as a full disk would) raises,
    leaves the old file as it was and no temporary behind."""
    target = tmp_path / "out.jsonl"
    target.write_text("precious\n")
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from crossrank.atomic import atomic_write
        try:
            with atomic_write({str(target)!r}) as fh:
                for _ in range(1000):
                    fh.write("x" * 100 + "\\n")
        except OSError as exc:
            print(exc.errno, exc.filename)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["27", str(target)]  # EFBIG, naming the target
    assert target.read_text() == "precious\n"
    assert leftovers(tmp_path) == []


def test_atomic_dir_replaces_and_survives_failures(tmp_path):
    dest = tmp_path / "model"

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps({"v": 1}))
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"1")

    assert atomic_dir(dest, fill) == dest
    assert json.loads((dest / "config.json").read_text()) == {"v": 1}

    def broken(tmp: Path) -> None:
        (tmp / "config.json").write_text("{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(dest, broken)
    assert json.loads((dest / "config.json").read_text()) == {"v": 1}
    assert leftovers(tmp_path) == []

    atomic_dir(dest, lambda tmp: (tmp / "config.json").write_text('{"v": 2}'))
    assert json.loads((dest / "config.json").read_text()) == {"v": 2}
    assert not (dest / "sub").exists()  # replaced whole, not merged
    assert leftovers(tmp_path) == []


def test_atomic_files_move_in_with_config_last(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text("kept\n")
    (run / "config.json").write_text("old")

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text("new")
        (tmp / "model.safetensors").write_bytes(b"w")

    moved = atomic_files(run, fill, last=("config.json",))
    assert [p.name for p in moved] == ["model.safetensors", "config.json"]
    assert (run / "config.json").read_text() == "new" and (run / "train_log.jsonl").exists()

    def broken(tmp: Path) -> None:
        (tmp / "config.json").write_text("newer")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_files(run, broken)
    assert (run / "config.json").read_text() == "new"
    assert leftovers(run) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = dead_pid()
    stale_file = tmp_path / temp_name("out.jsonl").replace(f"-{os.getpid()}-", f"-{dead}-")
    stale_file.write_text("partial")
    stale_dir = tmp_path / temp_name("checkpoint-300").replace(f"-{os.getpid()}-", f"-{dead}-")
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"0" * 100)
    legacy = tmp_path / f".tmp-checkpoint-200-{dead}"  # the checkpoint code's old naming
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    live = tmp_path / temp_name("other.jsonl")  # this (live) process's
    live.write_text("in progress")
    other_host = tmp_path / f".tmp-x.jsonl-00000000-{dead}-abcdef01"
    other_host.write_text("someone else's")
    users = [tmp_path / f".tmp-notes-{dead}", tmp_path / ".tmp-plain"]
    for p in users:
        p.write_text("a user's file that merely looks like a temporary")
    for name, inner in ((f".old-model-{dead}", "config.json"), (f".tmp-backup-{dead}", "a.txt")):
        users.append(tmp_path / name)  # a user's directories
        users[-1].mkdir()
        (users[-1] / inner).write_text("{}")

    atomic_write_text(tmp_path / "out.jsonl", "done\n")  # any atomic write cleans up
    names = {p.name for p in tmp_path.iterdir()}
    assert stale_file.name not in names and stale_dir.name not in names
    assert legacy.name not in names
    assert {live.name, other_host.name, *(p.name for p in users)} <= names
    assert remove_stale_temporaries(tmp_path) == []


def test_check_output(tmp_path):
    check_output("-")
    check_output(tmp_path / "new.jsonl")
    check_output("/dev/null")
    with pytest.raises(OutputError, match=r"missing/out\.jsonl: directory .*missing does not"):
        check_output(tmp_path / "missing" / "out.jsonl")
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path)
    check_output(tmp_path / "a" / "b", directory=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="must be a directory"):
        check_output(tmp_path / "file", directory=True)
    with pytest.raises(OutputError, match="is not a directory"):
        check_output(tmp_path / "file" / "sub", directory=True)
