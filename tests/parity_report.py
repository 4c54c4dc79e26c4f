"""Print the max abs score difference to the reference for each encoder architecture.

Not a test (tests/test_parity.py asserts the bound); the figures for notes and docs:
    cd tests && ../.venv/bin/python parity_report.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import tiny
from crossrank import Reranker
from oracle import reference_scores
from test_parity import pairs_mix

BUILDS = {
    "xlm-r (514 positions)": lambda p: tiny.roberta_checkpoint(p),
    "xlm-r (8194 positions)": lambda p: tiny.roberta_checkpoint(
        p, max_position_embeddings=8194, seed=1
    ),
    "roberta": lambda p: tiny.roberta_checkpoint(p, xlm=False, seed=2),
    "bert": lambda p: tiny.bert_checkpoint(p),
}


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    worst = 0.0
    for name, build in BUILDS.items():
        model_dir = build(tmp / name.split()[0])
        for max_length in (512, 48):
            rr = Reranker(model_dir, max_length=max_length)
            pairs = pairs_mix()
            ours = np.array(rr.compute_score(pairs))
            ref = np.array(reference_scores(model_dir, pairs, max_length=rr.max_length))
            diff = float(np.abs(ours - ref).max())
            worst = max(worst, diff)
            print(
                f"{name:24s} max_length={rr.max_length:4d} pairs={len(pairs)} max|diff|={diff:.1e}"
            )
    print(f"worst {worst:.1e}")


if __name__ == "__main__":
    main()
