"""Print the max abs score difference to the reference for each architecture.

Encoders against FlagEmbedding's input rules on transformers; ModernBERT cross-encoders against
transformers' tokenizer (``truncation=True``) and ModernBertForSequenceClassification;
Qwen3-Reranker against its authors' template and formula on transformers' Qwen3ForCausalLM.
Not a test (tests/test_parity.py, test_families_*.py assert the bound); the figures for notes:
    cd tests && ../.venv/bin/python parity_report.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from crossrank import Reranker
from crossrank import testing as tiny
from oracle import authors_scores, reference_scores
from test_families_modernbert import reference_scores as modernbert_reference
from test_parity import pairs_mix

BUILDS = {
    "xlm-r (514 positions)": lambda p: tiny.roberta_checkpoint(p),
    "xlm-r (8194 positions)": lambda p: tiny.roberta_checkpoint(
        p, max_position_embeddings=8194, seed=1
    ),
    "roberta": lambda p: tiny.roberta_checkpoint(p, xlm=False, seed=2),
    "bert": lambda p: tiny.bert_checkpoint(p),
}
MODERNBERT = {
    "modernbert (cls)": lambda p: tiny.modernbert_checkpoint(p),
    "modernbert (mean)": lambda p: tiny.modernbert_checkpoint(p, seed=1, classifier_pooling="mean"),
}
QWEN3 = {
    "qwen3 (tied)": lambda p: tiny.qwen3_checkpoint(p),
    "qwen3 (untied)": lambda p: tiny.qwen3_checkpoint(p, seed=1, tie_word_embeddings=False),
}


def line(name: str, max_length: int, n: int, diff: float) -> float:
    print(f"{name:24s} max_length={max_length:4d} pairs={n} max|diff|={diff:.1e}")
    return diff


def newer_families(tmp: Path) -> float:
    """ModernBERT and Qwen3-Reranker (the converted Qwen3 head too); the worst difference."""
    worst = 0.0
    pairs = pairs_mix()
    for name, build in MODERNBERT.items():
        model_dir = build(tmp / name.replace(" ", "").strip("()"))
        for max_length in (512, 48):
            ours = np.array(Reranker(model_dir, max_length=max_length).compute_score(pairs))
            ref = modernbert_reference(model_dir, pairs, max_length)
            worst = max(worst, line(name, max_length, len(pairs), float(np.abs(ours - ref).max())))
    for name, build in QWEN3.items():
        model_dir = build(tmp / name.replace(" ", "").strip("()"))
        dirs = {name: model_dir}
        if "untied" not in name:
            seqcls = tiny.qwen3_seqcls_checkpoint(model_dir, tmp / "qwen3-seq-cls")
            dirs["qwen3 (converted head)"] = seqcls
        for max_length in (512, 100):
            probs, diffs, _ = authors_scores(model_dir, pairs, max_length=max_length)
            for label, d in dirs.items():
                rr = Reranker(d, max_length=max_length)
                ours = np.array(rr.compute_score(pairs))
                diff = float(np.abs(ours - diffs.numpy()).max())
                p_diff = float(
                    np.abs(np.array(rr.compute_score(pairs, normalize=True)) - probs.numpy()).max()
                )
                worst = max(worst, line(label, max_length, len(pairs), diff))
                worst = max(worst, line(label + " P(yes)", max_length, len(pairs), p_diff))
    return worst


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
    worst = max(worst, newer_families(tmp))
    print(f"worst {worst:.1e}")


if __name__ == "__main__":
    main()
