"""``crossrank backends``: what ``backend="auto"`` measured on this machine for a model.

Prints the machine, each candidate's calibration speed and fidelity against exact fp32, and
the decision; measures on first use (or with ``--refresh``) and otherwise reads the cache
(:mod:`crossrank.engine.calibrate`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from crossrank.cli_args import UsageError, add_model_args, load_reranker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backends",
        help="measure (or show the cached) backend='auto' decision for a model on this machine",
        description="Times every backend this CPU runs for the model on a short calibration "
        "workload, checks each against exact fp32 (mean per-query Spearman >= 0.99), and shows "
        "which one backend='auto' uses. The decision is cached per model and machine.",
    )
    add_model_args(p)
    p.add_argument("--refresh", action="store_true", help="measure again, replacing the cache")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(func=cmd_backends)


def table(choice, machine: str) -> str:
    """The decision as a console table (the chosen candidate marked with ``*``)."""
    from crossrank.engine.auto import Candidate

    picked = Candidate(choice.backend, choice.quantize, choice.dtype).describe()
    base = next((t.pairs_per_s for t in choice.timings if t.candidate == "torch fp32"), 0.0)
    lines = [f"machine: {machine}", f"decision: {choice.describe()} ({choice.source})"]
    lines.append(
        f"  {'candidate':<13} {'pairs/s':>9} {'x fp32':>7} {'Spearman':>9} {'max diff':>9}"
    )
    for t in choice.timings:
        mark = "*" if t.candidate == picked else " "
        ratio = f"{t.pairs_per_s / base:.2f}" if base else "-"
        note = "" if t.faithful else ("  failed: " + t.error if t.error else "  not faithful")
        lines.append(
            f"{mark} {t.candidate:<13} {t.pairs_per_s:9.1f} {ratio:>7} {t.spearman:9.4f} "
            f"{t.max_abs_diff:9.2e}{note}"
        )
    lines.append(f"reason: {choice.reason}")
    return "\n".join(lines)


def cmd_backends(args: argparse.Namespace) -> int:
    from crossrank.cpu import describe
    from crossrank.engine.calibrate import fingerprint

    if args.backend not in ("torch", "auto") or args.quantize is not None:
        raise UsageError(
            "crossrank backends measures every backend itself; drop --backend / --quantize"
        )
    args.backend = "auto"
    if args.refresh:
        os.environ["CROSSRANK_AUTO_MEASURE"] = "refresh"
    rr = load_reranker(args, show_progress=False)
    choice = rr.backend_choice
    if args.json:
        json.dump({**choice.as_dict(), "machine": fingerprint()}, sys.stdout, indent=2)
        print()
    else:
        threads = fingerprint()["threads"]
        print(table(choice, f"{describe()}, {threads} threads"))
    return 0
