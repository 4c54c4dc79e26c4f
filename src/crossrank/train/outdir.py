"""Safety of the output directory, checked before any work starts.

- ``--output`` that is not empty and not a crossrank run is refused unless
  ``--overwrite-output-dir`` (then crossrank writes into it; files of the same names are
  replaced, other files kept);
- an existing crossrank run is refused without ``--resume`` (continue it) or a new
  ``--output``; ``--overwrite-output-dir`` starts over, removing that run's checkpoints and log;
- ``--resume`` with options that differ from the saved run's lists the differences and is
  refused unless ``--allow-config-change``;
- ``--model DIR --output DIR`` is refused (the final save would overwrite the initial model);
- temporary ``.tmp-*`` / ``.old-*`` directories left by killed runs are removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from crossrank.atomic import atomic_write_text, remove_stale_temporaries
from crossrank.errors import CrossrankError
from crossrank.train.checkpoint import STATE_FILE, find_last_checkpoint

logger = logging.getLogger(__name__)

#: written at the start of every run: marks the directory as a crossrank run
RUN_FILE = "run_config.json"
#: what a run writes (removed by --overwrite-output-dir on an old run)
RUN_ARTIFACTS = (RUN_FILE, "train_log.jsonl", "best")
#: options that do not change what is trained (never reported as a change)
NEUTRAL = {"resume", "show_progress", "overwrite_output_dir", "allow_config_change", "device"}


def is_run(output: Path) -> bool:
    """True when ``output`` holds a crossrank training run (its log, config or checkpoints)."""
    if (output / RUN_FILE).is_file() or (output / "train_log.jsonl").is_file():
        return True
    return any((d / STATE_FILE).is_file() for d in output.glob("checkpoint-*"))


def _same_path(a: Any, b: Any) -> bool:
    return os.path.abspath(str(a)) == os.path.abspath(str(b))


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: old -> new`` for every option that differs (paths compared as absolute)."""
    out = []
    for key, new in current.items():
        if key in NEUTRAL or key == "output" or key not in saved:
            continue
        old = saved[key]
        if old == new:
            continue
        if key in ("model", "data") and _same_path(old, new):
            continue
        out.append(f"{key} {old!r} -> {new!r}")
    return out


def check_output(cfg, model_dir: Path) -> Path | None:
    """Refuse unsafe uses of ``cfg.output``; returns the checkpoint to resume from, if any.

    Read-only, so every process of a distributed run can call it; :func:`prepare_output`
    then does the changes on the main process.
    """
    output = Path(cfg.output)
    if _same_path(output, model_dir) or _same_path(output, cfg.model):
        raise CrossrankError(
            f"--output {cfg.output} is the initial model's directory: the run would overwrite "
            "it; choose another --output"
        )
    if output.exists() and not output.is_dir():
        raise CrossrankError(f"--output {cfg.output} exists and is not a directory")
    entries = (
        [p for p in output.iterdir() if not p.name.startswith((".tmp-", ".old-"))]
        if (output.is_dir())
        else []
    )
    if not entries:
        if cfg.resume:
            logger.warning("--resume: no checkpoint under %s; starting from scratch", output)
        return None
    if not is_run(output):
        if cfg.overwrite_output_dir:
            return None
        raise CrossrankError(
            f"--output {cfg.output} is not empty and holds no crossrank run; choose an empty "
            "or new directory, or pass --overwrite-output-dir to write into it"
        )
    if not cfg.resume:
        if cfg.overwrite_output_dir:
            return None
        raise CrossrankError(
            f"--output {cfg.output} holds a crossrank run: pass --resume to continue it, or "
            "choose a new --output (--overwrite-output-dir starts it over)"
        )
    last = find_last_checkpoint(output)
    if last is None:
        raise CrossrankError(
            f"--resume: the run in {cfg.output} has no checkpoint to continue from (it saved "
            "none); choose a new --output, or pass --overwrite-output-dir without --resume"
        )
    saved = json.loads((last / STATE_FILE).read_text(encoding="utf-8")).get("config") or {}
    changes = config_changes(saved, cfg.as_dict())
    if changes:
        if not cfg.allow_config_change:
            raise CrossrankError(
                f"--resume: options differ from the run's in {last}: {'; '.join(changes)}; "
                "pass --allow-config-change to continue with the new ones"
            )
        logger.warning("--resume with changed options: %s", "; ".join(changes))
    return last


def prepare_output(cfg, resuming: bool) -> None:
    """On the main process: remove stale temporaries, start over an old run when told to,
    create the directory and record this run's options."""
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)  # those of dead processes only
    for old in output.glob(".old-*"):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    if cfg.overwrite_output_dir and not resuming and is_run(output):
        logger.warning("--overwrite-output-dir: removing the earlier run in %s", output)
        for d in output.glob("checkpoint-*"):
            shutil.rmtree(d, ignore_errors=True)
        for name in RUN_ARTIFACTS:
            p = output / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    atomic_write_text(output / RUN_FILE, json.dumps(cfg.as_dict(), indent=2, sort_keys=True) + "\n")
