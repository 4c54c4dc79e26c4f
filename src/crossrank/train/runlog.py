"""``train_log.jsonl``: one JSON object per logged step, evaluation and the final summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossrank.atomic import atomic_write_text


def trim_log(path: Path, start: int) -> None:
    """Keep the log records of steps up to ``start`` (a resumed run rewrites later ones)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in rec and rec["step"] <= start:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))


def write_log(path: Path, rec: dict[str, Any], main: bool = True) -> None:
    """Append one record (on the main process only)."""
    if not main:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
