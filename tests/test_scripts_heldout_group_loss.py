"""scripts/heldout_group_loss.py: it scores the groups of the steps after a run's last one
(never trained on) and reports their group cross-entropy as crossrank's scores give it."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.train.data import GroupSchedule, load_examples

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "heldout_group_loss.py"
WORDS = [
    "archive",
    "compress",
    "game",
    "strategy",
    "library",
    "network",
    "editor",
    "audio",
    "video",
    "font",
]


def test_scores_the_groups_after_the_run_with_the_training_loss(gemma_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    lines = []
    for i in range(12):  # 12 groups, 2 per step: steps 0-5 are the first epoch
        w = WORDS[i % len(WORDS)]
        neg = [f"{WORDS[(i + k) % len(WORDS)]} tool number {k}" for k in (1, 2, 3)]
        lines.append({"query": f"{w} {i}", "pos": [f"a {w} package {i}"], "neg": neg})
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = subprocess.run(
        [sys.executable, SCRIPT, data, "--after-steps", "2", "--steps", "2", "--group-size", "4",
         "--batch-size", "2", "--max-length", "64", "--prompt", "Relevant?",
         "-m", gemma_dir, "-m", gemma_dir],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"4 groups of steps 2-3 of {data} (chance: ln 4 = 1.3863)" in proc.stdout

    schedule = GroupSchedule(load_examples(str(data), 4), group_size=4, batch_size=2, seed=42)
    groups = [g for step in (2, 3) for g in schedule.micro_batch(step, 0)]
    trained = {g.query for step in (0, 1) for g in schedule.micro_batch(step, 0)}
    assert not trained & {g.query for g in groups}  # none of the run's groups
    reranker = Reranker(gemma_dir, max_length=64)
    losses = []
    for g in groups:
        scores = reranker.compute_score([(g.query, p) for p in g.passages], prompt="Relevant?")
        losses.append(math.log(sum(math.exp(s) for s in scores)) - scores[0])
    shown = [float(x) for x in re.findall(r"group loss (\S+)", proc.stdout)]
    assert shown == pytest.approx([sum(losses) / 4] * 2, abs=1e-4)
    assert "M2 - M1: +0.0000 ± 0.0000 (t 0.00, p 1.0000)" in proc.stdout
