"""Atomic checkpoints in Hugging Face layout, plus the training state ``--resume`` needs.

A checkpoint directory is written complete under a temporary name and renamed into place
(:func:`crossrank.atomic.atomic_dir`), so a run killed while saving leaves the previous
checkpoint as it was and at worst a ``.tmp-*`` directory, which is ignored and removed by the
next save once its process is gone.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrank.atomic import atomic_dir, atomic_files
from crossrank.config import EncoderConfig

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


def save_model(
    model: torch.nn.Module,
    config: EncoderConfig,
    tokenizer_dir: Path,
    dest: Path,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save our cross-encoder as a loadable model directory, atomically (no training state)."""
    from crossrank.models.weights import ours_to_hf, write_checkpoint

    state = ours_to_hf(model.state_dict(), config)
    return atomic_dir(
        dest,
        lambda tmp: write_checkpoint(
            tmp, state, config.to_dict(), dtype=dtype, tokenizer_dir=tokenizer_dir
        ),
    )


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    dest: Path,
    *,
    write_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    step: int,
    rank_states: list[dict[str, Any]],
    extra: dict[str, Any],
) -> Path:
    """A full checkpoint: model files (``write_model(dir)``, the task's) + optimizer,
    scheduler, RNG of every rank, data position."""

    def fill(tmp: Path) -> None:
        write_model(tmp)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / "optimizer.pt",
        )
        for rank, st in enumerate(rank_states):
            torch.save(st, tmp / f"rng_state_{rank}.pth")
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2) + "\n")

    return atomic_dir(dest, fill)


def load_state(resume_dir: Path, optimizer, scheduler, scaler, rank: int) -> tuple[int, Any]:
    """Restore optimizer, scheduler, grad scaler and this rank's RNG; ``(step, best)``."""
    meta = json.loads((resume_dir / STATE_FILE).read_text())
    opt = torch.load(resume_dir / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    if scaler is not None and opt.get("scaler"):
        scaler.load_state_dict(opt["scaler"])
    rng_file = resume_dir / f"rng_state_{rank}.pth"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        logger.warning(
            "%s has no RNG state for rank %d (different process count)", resume_dir, rank
        )
    return int(meta["step"]), meta.get("best")


def save_final(write_model: Callable[[Path], None], output: Path) -> None:
    """Model files at the top of ``output``: written to a temp dir, each moved in atomically
    (:func:`crossrank.atomic.atomic_files`), weights first, config last: config.json is what
    marks a directory as a model."""
    atomic_files(output, write_model, last=("config.json", "adapter_config.json"))


def find_last_checkpoint(output: Path) -> Path | None:
    """The complete ``checkpoint-N`` directory with the highest N under ``output``, if any."""
    best, best_step = None, -1
    if not output.is_dir():
        return None
    for d in output.glob("checkpoint-*"):
        if not (d / STATE_FILE).is_file():
            continue
        try:
            step = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if step > best_step:
            best, best_step = d, step
    return best


def prune_checkpoints(output: Path, keep: int) -> None:
    """Remove all but the ``keep`` newest ``checkpoint-N`` directories (and stale temp dirs)."""
    ckpts = sorted(
        (d for d in output.glob("checkpoint-*") if d.name.split("-", 1)[1].isdigit()),
        key=lambda d: int(d.name.split("-", 1)[1]),
    )
    for d in ckpts[: max(len(ckpts) - keep, 0)]:
        shutil.rmtree(d, ignore_errors=True)
