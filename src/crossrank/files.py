"""Reading the text files users hand us: plain or gzip-compressed, JSON lines, ``-`` for stdin.

Every problem with an input file is an :class:`~crossrank.errors.InputError` naming the file:
missing or a directory, invalid UTF-8 (line and byte offset), not gzip data or a truncated
gzip stream (the line reached), invalid JSON (line).
"""

from __future__ import annotations

import contextlib
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from crossrank.errors import InputError

UTF8_FIX = "save the file as UTF-8"


def open_input(path: str) -> IO[str]:
    """Open ``path`` for reading text (``-`` is stdin, ``.gz`` is decompressed).

    Raises:
        InputError: the file does not exist.
    """
    if path == "-":
        return sys.stdin
    p = _check_readable(path)
    if p.suffix == ".gz":
        import gzip

        return gzip.open(p, "rt", encoding="utf-8")
    return open(p, encoding="utf-8")


def _check_readable(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return p


def check_input(path: str) -> None:
    """Pre-flight check of an input file (``-`` passes): it exists and is not a directory."""
    if path != "-":
        _check_readable(path)


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """``path`` opened for reading bytes (``-`` is stdin, left open; ``.gz`` is decompressed).

    Raises:
        InputError: the file does not exist, is a directory or cannot be read.
    """
    if path == "-":
        yield sys.stdin.buffer
        return
    p = _check_readable(path)
    try:
        if p.suffix == ".gz":
            import gzip

            fh: IO[bytes] = gzip.open(p, "rb")  # type: ignore[assignment]  # noqa: SIM115
        else:
            fh = open(p, "rb")  # noqa: SIM115
    except PermissionError:
        raise InputError(f"{path}: permission denied; make the file readable") from None
    with fh:
        yield fh


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for each line of a UTF-8 text file (``.gz`` and ``-`` too),
    without its line ending (``\\n`` or ``\\r\\n``) or a leading byte order mark.

    Raises:
        InputError: as :func:`open_binary`, and for invalid UTF-8 (with the line and the byte
            offset), a file that is not gzip data, or a truncated gzip stream.
    """
    gz = path.endswith(".gz") and path != "-"
    with open_binary(path) as fh:
        lines = iter(fh)
        lineno, offset = 0, 0
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except EOFError:
                raise InputError(
                    f"{path}: truncated gzip file: the compressed data ends after line {lineno}; "
                    "copy or download it again"
                ) from None
            except (OSError, zlib.error) as exc:
                if not gz:
                    raise
                raise InputError(
                    f"{path}: not a valid gzip file ({exc}); decompress it or drop the .gz suffix"
                ) from None
            lineno += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                data = "decompressed data" if gz else "file"
                raise InputError(
                    f"{path}:{lineno}: invalid UTF-8 at byte {exc.start + 1} of the line "
                    f"(offset {offset + exc.start} of the {data}); {UTF8_FIX}"
                ) from None
            offset += len(raw)
            if lineno == 1 and text.startswith("\ufeff"):  # a byte order mark (Windows editors)
                text = text[1:]
            if text.endswith("\n"):
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            yield lineno, text


def parse_json_object(line: str, where: str) -> dict[str, Any]:
    """One JSON object from ``line``; ``where`` (``file:line``) prefixes the error message."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    return obj


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` from a JSON-lines file, skipping blank lines."""
    for lineno, line in iter_lines(path):
        if line.strip():
            yield lineno, parse_json_object(line, f"{path}:{lineno}")


def require_str(obj: dict[str, Any], field: str, where: str) -> str:
    """``obj[field]`` when it is a string, else an InputError naming ``where``."""
    value = obj.get(field)
    if not isinstance(value, str):
        raise InputError(f"{where}: missing string field {field!r}")
    return value
