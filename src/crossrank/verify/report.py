"""What ``crossrank verify`` shows and writes: console table, JSON, markdown, plot, tolerances.

Every file is written atomically (:mod:`crossrank.atomic`). The plot needs matplotlib
(``pip install 'crossrank[eval]'``), imported only when a report is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import missing_extra
from crossrank.verify.runner import NDCG, REF_NDCG, VerifyResult

#: the rows of the table: (label, key in a candidate's numbers, format)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("scale compared", "compared_on", "s"),
    ("queries", "queries", "d"),
    ("failed queries", "failed_queries", "d"),
    ("max |diff|", "max_abs_diff", ".3g"),
    ("mean |diff|", "mean_abs_diff", ".3g"),
    ("Spearman (mean)", "spearman", ".4f"),
    ("Kendall tau (mean)", "kendall_tau", ".4f"),
    ("top-1 agreement", "top1_agreement", ".3f"),
    ("top-5 agreement", "top5_agreement", ".3f"),
    ("top-10 agreement", "top10_agreement", ".3f"),
    ("top-10 set changed", "top10_changed", "d"),
    (NDCG, NDCG, ".4f"),
    (f"{NDCG} of the reference, same queries", REF_NDCG, ".4f"),
)


@dataclass(frozen=True)
class Tolerance:
    """Limits a candidate must meet (None: not checked)."""

    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    min_spearman: float | None = None
    min_kendall: float | None = None
    min_top1: float | None = None
    min_top10: float | None = None
    max_top10_changed: int | None = None

    def given(self) -> bool:
        """True when at least one limit is set."""
        return any(v is not None for v in vars(self).values())

    def breaches(self, row: dict[str, Any]) -> list[str]:
        """The limits ``row`` (a candidate's numbers) does not meet, one phrase each."""
        if not self.given():
            return []
        out = []
        checks = (
            ("max_abs_diff", "max_abs_diff", "<="),
            ("mean_abs_diff", "mean_abs_diff", "<="),
            ("spearman", "min_spearman", ">="),
            ("kendall_tau", "min_kendall", ">="),
            ("top1_agreement", "min_top1", ">="),
            ("top10_agreement", "min_top10", ">="),
            ("top10_changed", "max_top10_changed", "<="),
        )
        for key, limit_name, op in checks:
            limit = getattr(self, limit_name)
            if limit is None:
                continue
            value = row.get(key)
            ok = value is not None and (value <= limit if op == "<=" else value >= limit)
            if not ok:
                out.append(f"{key} {_fmt(value, '.4g')} (limit {op} {limit:g})")
        if row.get("failed_queries"):
            out.append(f"{row['failed_queries']} queries failed ({row.get('first_error')})")
        if not row.get("queries"):
            out.append("no query compared")
        return out


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(result: VerifyResult, markdown: bool = False) -> str:
    """The comparison table: one row per measure, one column per candidate."""
    names = [c["name"] for c in result.candidates]
    with_qrels = result.reference.get(NDCG) is not None
    rows = [r for r in ROWS if with_qrels or r[1] not in (NDCG, REF_NDCG)]
    body = [
        [label, *(_fmt(c.get(key), fmt) for c in result.candidates)] for label, key, fmt in rows
    ]
    if with_qrels:
        body[-2][0] = f"{NDCG} (reference {result.reference[NDCG]:.4f})"
    header = ["", *names]
    if markdown:
        body = [[r[0].replace("|", "\\|"), *r[1:]] for r in body]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *body]
    )


def format_console(result: VerifyResult, tolerance: Tolerance, worst_shown: int = 3) -> str:
    """The table, the worst queries of each candidate, and the tolerance verdicts."""
    ref = result.reference
    lines = [
        f"reference: {ref['name']} ({ref.get('scale')} scores); {result.queries} queries"
        + (f", {result.skipped} skipped (reference failed)" if result.skipped else ""),
        "",
        format_table(result),
    ]
    for name, worst in result.worst.items():
        if not worst[:worst_shown]:
            continue
        lines += ["", f"worst queries of {name} (by Spearman):"]
        for w in worst[:worst_shown]:
            lines.append(
                f"  {w['query_id']}: Spearman {_fmt(w['spearman'], '.3f')}, "
                f"max |diff| {w['max_abs_diff']:.3g}, top-10 {w['top10_agreement']:.1f}  "
                f"{w['query'][:60]!r}"
            )
    if tolerance.given():
        lines.append("")
        for c in result.candidates:
            found = tolerance.breaches(c)
            verdict = "ok" if not found else "FAILED: " + "; ".join(found)
            lines.append(f"tolerance {c['name']}: {verdict}")
    return "\n".join(lines)


def to_json(result: VerifyResult, tolerance: Tolerance) -> dict[str, Any]:
    """The report as a JSON-able dict (NaN as null)."""
    candidates = []
    for c in result.candidates:
        row = dict(c)
        row["worst_queries"] = result.worst.get(c["name"], [])
        if tolerance.given():
            row["tolerance_breaches"] = tolerance.breaches(c)
        candidates.append(row)
    limits = {k: v for k, v in vars(tolerance).items() if v is not None}
    data = {
        "reference": result.reference,
        "queries": result.queries,
        "skipped_queries": result.skipped,
        "scale": result.scale,
        "tolerance": limits,
        "candidates": candidates,
    }
    return _clean(data)


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(result: VerifyResult, tolerance: Tolerance, path: str | Path) -> None:
    """Write :func:`to_json` to ``path`` atomically."""
    from crossrank.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(to_json(result, tolerance), indent=2) + "\n")


def write_markdown(
    result: VerifyResult, tolerance: Tolerance, path: str | Path, command: str | None = None
) -> Path | None:
    """A markdown report (table, verdicts, worst queries with their pairs) and, when
    matplotlib is installed, ``<report stem>.png`` (candidate vs reference scores); returns
    the PNG's path or None."""
    from crossrank.atomic import atomic_write_text

    path = Path(path)
    png: Path | None = path.with_suffix(".png")
    try:
        plot_scores(result, png)
    except ImportError:
        png = None
    ref = result.reference
    out = ["# crossrank verify", ""]
    if command:
        out += ["```", command, "```", ""]
    out += [
        f"Reference: `{ref['name']}` ({ref.get('scale')} scores), {result.queries} queries.",
        "",
    ]
    out += [format_table(result, markdown=True), ""]
    if tolerance.given():
        for c in result.candidates:
            found = tolerance.breaches(c)
            out.append(
                f"- tolerance `{c['name']}`: "
                + ("ok" if not found else "FAILED: " + "; ".join(found))
            )
        out.append("")
    if png is not None:
        out += [f"![candidate vs reference scores]({png.name})", ""]
    for name, worst in result.worst.items():
        if not worst:
            continue
        out += [f"## Worst queries of `{name}`", ""]
        for w in worst:
            out += [
                f"### {w['query_id']}: {w['query'][:100]}",
                "",
                f"Spearman {_fmt(w['spearman'], '.3f')}, Kendall {_fmt(w['kendall'], '.3f')}, "
                f"max |diff| {w['max_abs_diff']:.3g}, top-10 agreement {w['top10_agreement']:.1f}",
                "",
                "| doc | ref rank | cand rank | reference | candidate | text |",
                "|---|---|---|---|---|---|",
            ]
            for p in w["pairs"]:
                text = p["text"].replace("|", "\\|").replace("\n", " ")[:80]
                out.append(
                    f"| {p['doc_id']} | {p['reference_rank']} | {p['candidate_rank']} | "
                    f"{p['reference']:.4f} | {p['candidate']:.4f} | {text} |"
                )
            out.append("")
    atomic_write_text(path, "\n".join(out))
    return png


def plot_scores(result: VerifyResult, path: str | Path) -> None:
    """PNG: each candidate's scores against the reference's (a sample of up to 4000 pairs
    per candidate, on the scale compared)."""
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("eval", "matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossrank.atomic import save_figure

    n = max(1, len(result.candidates))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4.2), dpi=100, squeeze=False)
    for ax, c in zip(axes[0], result.candidates):
        pts = result.samples.get(c["name"], [])
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=3, alpha=0.4)
            lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
            ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
        ax.set_title(c["name"][:40], fontsize="small")
        ax.set_xlabel(f"reference ({c.get('compared_on')})")
        ax.set_ylabel("candidate")
    save_figure(fig, path)
