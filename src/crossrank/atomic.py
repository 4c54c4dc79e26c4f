"""Atomic outputs: every file or directory crossrank writes appears complete or not at all.

- :func:`atomic_write` opens a temporary file next to the target (same directory, so the
  rename stays on one file system), and on success flushes, fsyncs and renames it over the
  target. On any exception, ``KeyboardInterrupt`` included, the temporary file is removed and
  the target is untouched: an interrupted run never leaves a partial file under the final
  name, and ``-i X -o X`` never loses ``X``.
- :func:`atomic_dir` does the same for a directory: ``fill(tmp)`` writes a temporary sibling
  directory, which is renamed into place (an existing target is moved aside first and
  removed after).

Temporaries are named ``.tmp-<target name>-<host>-<pid>-<random>``. A run killed with
``SIGKILL`` cannot remove its own, so every atomic write first removes the temporaries in its
directory that belong to a process of this host that no longer exists
(:func:`remove_stale_temporaries`); those of live processes and of other hosts (a shared file
system) are left alone.

:func:`check_output` is the pre-flight check of an output path, run before a model loads.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from crossrank.errors import OutputError

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_name(target: str) -> str:
    """A fresh temporary name for ``target`` (a file or directory name, no directory)."""
    return f"{TMP_PREFIX}{target}-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


_NAME = re.compile(r"^\.tmp-.+-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}$")
#: temporaries of checkpoint saves before this module (``.tmp-<name>-<pid>``): recognised
#: only as directories holding model files (or nothing), so that a user's own
#: ``.tmp-notes-2024`` is never taken for one
_LEGACY = re.compile(r"^\.tmp-.+-([0-9]+)$")
_LEGACY_FILES = ("config.json", "model.safetensors", "trainer_state.json", "optimizer.pt")


def _owner(entry: Path) -> tuple[str, int] | None:
    """``(host tag, pid)`` of one of our temporaries, None for anything else."""
    m = _NAME.match(entry.name)
    if m:
        return m.group(1), int(m.group(2))
    m = _LEGACY.match(entry.name)
    if m and entry.is_dir() and not entry.is_symlink():
        names = {f.name for f in entry.iterdir()}
        if not names or names & set(_LEGACY_FILES):
            return _host_tag(), int(m.group(1))
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporaries in ``directory`` left by dead processes of this host."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        try:
            owner = _owner(entry)
        except OSError:
            continue
        if owner is None or owner[0] != host or _alive(owner[1]):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            logger.debug("could not remove the stale temporary %s (%s)", entry, exc)
            continue
        removed.append(entry)
        logger.info("removed %s, left by an earlier run that was killed", entry)
    return removed


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:  # e.g. EINVAL on file systems that cannot sync: not fatal
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
            raise


def fsync_dir(path: str | Path) -> None:
    """fsync a directory (its entries), ignoring platforms that cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _is_special(path: Path) -> bool:
    """An existing target that is not a regular file (``/dev/null``, a FIFO, a terminal):
    written in place, since renaming over it would replace the device or pipe itself."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (for writers that take a file
    name: safetensors, ONNX, matplotlib), fsynced and renamed over ``path`` on success.

    The target keeps its permission bits when it exists (the usual ``0666 & ~umask``
    otherwise). A target that exists and is not a regular file (``/dev/null``, a named pipe)
    is yielded itself and written in place. On an exception the temporary file is removed
    and the exception propagates; ``path`` is untouched.
    """
    target = Path(path)
    if target.is_symlink():  # write through the link, keep the link
        target = target.resolve()
    if _is_special(target):
        try:
            yield target
        except OSError as exc:
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(target)) from exc
            raise
        return
    remove_stale_temporaries(target.parent)
    tmp = target.with_name(temp_name(target.name))
    try:
        perms = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        perms = _default_mode()
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            _fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, perms)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename is None or exc.filename == str(tmp):  # name the target, not our temp
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | Path,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    compress: bool = False,
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing through a temporary file renamed into place on success
    (see :func:`atomic_path`).

    Args:
        path: the target file.
        mode: ``"w"`` (text, no newline translation) or ``"wb"`` (bytes).
        encoding: text encoding (text mode only).
        compress: gzip the content (for ``.gz`` targets).

    Example:
        >>> with atomic_write("scores.jsonl") as out:  # doctest: +SKIP
        ...     out.write('{"score": 1.5}\\n')
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        gz = gzip.GzipFile(filename=Path(path).name, mode="wb", fileobj=raw) if compress else None
        handle: IO[Any] = gz if gz is not None else raw
        if mode == "w":
            handle = io.TextIOWrapper(handle, encoding=encoding, newline="")  # type: ignore[arg-type]
        yield handle
        if mode == "w":
            handle.flush()
            handle.detach()  # type: ignore[attr-defined]
        if gz is not None:
            gz.close()


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, encoding=encoding) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def _fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            fd = os.open(f, os.O_RDONLY)
            try:
                _fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(path)


def atomic_dir(dest: str | Path, fill: Callable[[Path], Any]) -> Path:
    """Create directory ``dest`` atomically and return it.

    ``fill(tmp)`` writes the content into a fresh temporary directory next to ``dest``; the
    files are fsynced and the directory is renamed to ``dest`` (an existing ``dest`` is moved
    aside first and removed after). If ``fill`` raises (or the run is interrupted), ``dest`` is
    untouched and the temporary directory is removed.

    Example:
        >>> atomic_dir("out/model", lambda tmp: (tmp / "config.json").write_text("{}"))  # doctest: +SKIP
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent)
    tmp = dest.with_name(temp_name(dest.name))
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        old = None
        if dest.exists():
            old = dest.with_name(temp_name(dest.name))
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None and not dest.exists():
                os.replace(old, dest)  # put the previous content back
            raise
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def atomic_files(
    directory: str | Path, fill: Callable[[Path], Any], *, last: tuple[str, ...] = ()
) -> list[Path]:
    """Write some files into an existing ``directory`` that holds others (a training run's
    final model next to its checkpoints and log): ``fill(tmp)`` writes them into a temporary
    directory inside ``directory``, then each is fsynced and renamed into place, the names in
    ``last`` last (``config.json``: what marks a directory as a model). Each file appears
    whole; on an exception in ``fill`` nothing is moved and the temporary is removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)
    tmp = directory / temp_name("files")
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        names.sort(key=lambda n: n in last)
        for name in names:
            os.replace(tmp / name, directory / name)
        fsync_dir(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [directory / n for n in names]


def check_output(path: str | Path, *, what: str = "output", directory: bool = False) -> None:
    """Pre-flight check of an output location, before any work starts.

    A file output needs an existing, writable parent directory and must not be a directory
    (``-`` is stdout and always passes). With ``directory``, the output is a directory to
    create or replace: its nearest existing ancestor must be a writable directory.

    Raises:
        OutputError: one line naming the path and what to do.
    """
    if str(path) == "-":
        return
    p = Path(path).expanduser()
    if directory:
        if p.exists() and not p.is_dir():
            raise OutputError(f"{path}: {what} must be a directory, but it is a file")
        base = p
        while not base.exists():
            if base.parent == base:
                break
            base = base.parent
        if not base.is_dir():
            raise OutputError(f"{path}: {base} is not a directory")
        if not os.access(base, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: {base} is not writable; choose another {what}")
        return
    if p.is_dir():
        raise OutputError(f"{path}: {what} is a directory; give a file name")
    parent = p.parent
    if not parent.is_dir():
        raise OutputError(
            f"{path}: directory {parent} does not exist; create it or choose another {what}"
        )
    if _is_special(p):
        if not os.access(p, os.W_OK):
            raise OutputError(f"{path}: not writable")
        return
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{path}: directory {parent} is not writable; choose another {what} location"
        )
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{path}: {what} file is read-only; remove it or choose another name")


@contextlib.contextmanager
def open_output(path: str | Path) -> Iterator[IO[str]]:
    """A text output: stdout for ``-`` (left open), else :func:`atomic_write`."""
    if str(path) == "-":
        yield sys.stdout
        return
    with atomic_write(path) as fh:
        yield fh


def save_figure(fig: Any, path: str | Path) -> None:
    """Lay out a matplotlib figure and write it to ``path`` as PNG, atomically; the figure is
    closed either way."""
    import matplotlib.pyplot as plt  # the caller has checked for matplotlib

    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(str(tmp), format="png")
    finally:
        plt.close(fig)
