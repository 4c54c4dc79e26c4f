"""Present evaluation results: console table, JSON document, markdown report with a plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.atomic import atomic_write_text, save_figure
from crossrank.errors import missing_extra
from crossrank.eval.metrics import Evaluation
from crossrank.eval.significance import Comparison, compare

PRIMARY = "nDCG@10"


@dataclass
class EvalResult:
    """Everything ``crossrank eval`` measured: the first stage and each model's reranked run."""

    dataset: str
    split: str
    first_stage_name: str
    top_k: int
    first_stage: Evaluation
    models: dict[str, Evaluation] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # model -> rerank wall time
    sampled: tuple[int, int] | None = None  # (sample size, pool size) with --max-queries
    seed: int = 0

    @property
    def queries(self) -> int:
        return self.first_stage.queries

    def comparisons(self, measure: str = PRIMARY) -> list[Comparison]:
        """Paired tests on ``measure``: each model against the first stage, then each later
        model against the first one (M1, the baseline: list it first)."""
        first = self.first_stage_name
        out = [compare(ev, self.first_stage, measure, m, first) for m, ev in self.models.items()]
        if len(self.models) > 1:
            (m1, base), *rest = self.models.items()
            out += [compare(ev, base, measure, m, m1) for m, ev in rest]
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"dataset", "split", "queries", "first_stage": {...}, "models": {model: {...}},
        "comparisons": [...]}`` (:meth:`comparisons`, as :meth:`Comparison.to_json`)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.queries,
            "first_stage": dict(self.first_stage),
            "models": {name: dict(ev) for name, ev in self.models.items()},
            "comparisons": [c.to_json() for c in self.comparisons()],
        }


def write_json(result: EvalResult, path: str | Path) -> None:
    """Write :meth:`EvalResult.to_json` to ``path`` (atomically)."""
    atomic_write_text(path, json.dumps(result.to_json(), indent=2) + "\n")


def summary_line(result: EvalResult) -> str:
    fs = result.first_stage
    parts = [f"{result.dataset} [{result.split}]: {fs.queries} queries evaluated"]
    if result.sampled:
        parts.append(f"sample of {result.sampled[0]} of {result.sampled[1]} (seed {result.seed})")
    if fs.skipped_no_relevant:
        parts.append(f"{fs.skipped_no_relevant} skipped (no relevant document)")
    if fs.not_in_run and not result.sampled:
        parts.append(f"{fs.not_in_run} judged queries not in the first stage")
    first = f"first stage: {result.first_stage_name}"
    if result.models:
        first += f", top {result.top_k} reranked"
    return "; ".join(parts) + "\n" + first


def format_table(result: EvalResult, markdown: bool = False) -> str:
    """First stage vs each model, with deltas; one column per model (labelled M1, M2...)."""
    labels = [f"M{i}" for i in range(1, len(result.models) + 1)]
    header = ["metric", "first stage"] + labels
    rows = []
    for name in result.first_stage:
        base = result.first_stage[name]
        row = [name, f"{base:.4f}"]
        for ev in result.models.values():
            row.append(f"{ev[name]:.4f} ({ev[name] - base:+.4f})")
        rows.append(row)
    legend = [f"{label} = {model}" for label, model in zip(labels, result.models)]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + ("\n\n" + "\n".join(f"- {x}" for x in legend) if legend else "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines + legend)


def format_comparisons(result: EvalResult, prefix: str = "  ") -> list[str]:
    """A heading, then one line per :meth:`EvalResult.comparisons` (starting with ``prefix``),
    models named by their labels (M1, M2...)."""
    comparisons = result.comparisons()
    if not comparisons:
        return []
    k = len(result.models)
    names = [f"M{i} - first stage" for i in range(1, k + 1)]
    names += [f"M{i} - M1" for i in range(2, k + 1)]
    width = max(map(len, names))
    head = f"paired t-test on {PRIMARY}, two-sided, over the {comparisons[0].queries} queries:"
    return [head] + [
        f"{prefix}{n.ljust(width)}  {c.describe()}" for n, c in zip(names, comparisons)
    ]


def format_console(result: EvalResult) -> str:
    text = summary_line(result) + "\n\n" + format_table(result)
    if result.models:
        text += "\n\n" + "\n".join(format_comparisons(result))
    if result.seconds:
        text += "\n" + "\n".join(
            f"reranking with {m}: {s:.1f} s" for m, s in result.seconds.items()
        )
    return text


def plot_deltas(result: EvalResult, path: str | Path) -> None:
    """PNG of the per-query nDCG@10 change (reranked - first stage), sorted, one line per model."""
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("eval", "matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    base = result.first_stage.per_query
    for label, (model, ev) in zip(range(1, len(result.models) + 1), result.models.items()):
        deltas = sorted(
            (ev.per_query[q][PRIMARY] - base[q][PRIMARY] for q in base if q in ev.per_query),
            reverse=True,
        )
        c = compare(ev, result.first_stage)
        ax.plot(
            range(len(deltas)),
            deltas,
            label=f"M{label} {_short(model)} (+{c.better} / -{c.worse})",
            drawstyle="steps-mid",
        )
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("queries, sorted by change")
    ax.set_ylabel(f"{PRIMARY} reranked - first stage")
    ax.set_title(f"{result.dataset} [{result.split}]: per-query {PRIMARY} change")
    if result.models:
        ax.legend(loc="best", fontsize="small")
    save_figure(fig, path)


def write_markdown(result: EvalResult, path: str | Path, command: str | None = None) -> Path:
    """A markdown report next to a PNG plot (``<report stem>.png``); returns the PNG's path."""
    path = Path(path)
    png = path.with_suffix(".png")
    plot_deltas(result, png)
    lines = [f"# Evaluation: {result.dataset} [{result.split}]", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [summary_line(result).replace("\n", "  \n"), "", format_table(result, markdown=True)]
    if result.models:
        lines += ["", f"![per-query {PRIMARY} change]({png.name})", ""]
        lines += format_comparisons(result, prefix="- ")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return png


def _short(model: str, width: int = 40) -> str:
    return model if len(model) <= width else "…" + model[-(width - 1) :]
