"""``crossrank verify``: how far other scorers agree with a reference on the user's own data.

A reference (default: crossrank's exact fp32 path of the checkpoint) and candidates (crossrank
configurations or running services in one of the dialects of :mod:`.clients`) score the same
query groups (:mod:`.groups`, read lazily); :mod:`.stats` compares them query by query,
:mod:`.runner` runs the comparison (batched, concurrent, bounded memory) and :mod:`.report`
shows and writes the result. docs/verifying.md is the user guide.

Example:
    >>> from crossrank.verify import parse_spec, build_scorer, verify, read_jsonl_groups
    >>> ref = build_scorer(parse_spec("dtype:fp32"), model="crossrank/minilm-debian")  # doctest: +SKIP
    >>> cand = build_scorer(parse_spec("backend:onnx,quantize:int8"), model="crossrank/minilm-debian")  # doctest: +SKIP
    >>> verify(read_jsonl_groups("queries.jsonl"), ref, [cand]).candidates[0]["spearman"]  # doctest: +SKIP

Importing this package is cheap: numpy, httpx and torch come with the functions that need
them.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "QueryGroup": "crossrank.verify.groups",
    "beir_groups": "crossrank.verify.groups",
    "read_jsonl_groups": "crossrank.verify.groups",
    "VerifyResult": "crossrank.verify.runner",
    "verify": "crossrank.verify.runner",
    "Scorer": "crossrank.verify.scorers",
    "ScorerSpec": "crossrank.verify.scorers",
    "build_scorer": "crossrank.verify.scorers",
    "parse_spec": "crossrank.verify.scorers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossrank.verify' has no attribute {name!r}")
