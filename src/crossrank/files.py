"""Reading the text files users hand us: plain or gzip-compressed, JSON lines, ``-`` for stdin."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from crossrank.errors import InputError


def open_input(path: str) -> IO[str]:
    """Open ``path`` for reading text (``-`` is stdin, ``.gz`` is decompressed).

    Raises:
        InputError: the file does not exist.
    """
    if path == "-":
        return sys.stdin
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    if p.suffix == ".gz":
        import gzip

        return gzip.open(p, "rt", encoding="utf-8")
    return open(p, encoding="utf-8")


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
    with open_input(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield lineno, parse_json_object(line, f"{path}:{lineno}")


def require_str(obj: dict[str, Any], field: str, where: str) -> str:
    """``obj[field]`` when it is a string, else an InputError naming ``where``."""
    value = obj.get(field)
    if not isinstance(value, str):
        raise InputError(f"{where}: missing string field {field!r}")
    return value
