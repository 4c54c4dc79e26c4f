"""The measurement behind ``backend="auto"``: time each candidate, check its fidelity, cache.

The workload (:func:`calibration_pairs`) is 3 queries x 16 real passages (Debian package
descriptions shipped with the package: short, medium and two-document passages, 48 pairs):
the model's own shapes at realistic lengths. Each candidate scores all of it once to warm up
(first-call allocations, oneDNN's kernel choice, ONNX Runtime's session, torch.compile's graphs
for the int8 decoders) and once timed; its scores are compared with torch fp32's per query
(Spearman) and in absolute value.

The result is cached in ``$CROSSRANK_CACHE/auto/<key>.json`` (default ``~/.cache/crossrank``),
keyed by the checkpoint (path, file sizes and modification times), the options that change
the work (max_length, family options) and the machine fingerprint (:func:`fingerprint`: CPU
model and the features its kernels use, threads, library versions): a new machine, a new
torch or a retrained checkpoint measures again. Measuring costs seconds for encoders of
bge-reranker-base's size on two cores; it runs once per machine and model.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrank import hub
from crossrank._version import __version__
from crossrank.atomic import atomic_write_text
from crossrank.bundled import EXAMPLE_DIR
from crossrank.cpu import cpu_features, cpu_model, int8_scheme
from crossrank.engine import malloc
from crossrank.engine.auto import (
    MIN_SPEARMAN,
    BackendChoice,
    Candidate,
    Timing,
    _dtype_name,
    pick,
)
from crossrank.models.weights import weight_files

logger = logging.getLogger(__name__)

#: bump when the workload, the candidates or the decision rule change (invalidates cached
#: decisions); 2: the decoders' int8 products; 3: their rotated down projection and bf16
#: attention (other speed, other fidelity); 4: the rotation over strided groups and the
#: MLP's C++ loop
CALIBRATION_VERSION = 4
#: a scorer: pairs in, float32 scores out (one per pair)
Scorer = Callable[[Sequence[tuple[str, str]]], np.ndarray]

_QUERIES = ("image editor", "download files from the web", "text editor for programmers")
PER_QUERY = 16


def calibration_pairs() -> tuple[list[tuple[str, str]], list[int]]:
    """The calibration pairs and each pair's query index (3 queries x 16 passages)."""
    docs = [json.loads(line)["text"] for line in (EXAMPLE_DIR / "documents.jsonl").open()]
    first = [d.split(". ")[0] + "." for d in docs]  # the package's one-line summary
    joined = [f"{a} {b}" for a, b in zip(docs, docs[1:] + docs[:1])]  # two descriptions
    passages = docs + first + joined
    pairs, groups = [], []
    for qi, query in enumerate(_QUERIES):
        for j in range(PER_QUERY):
            pairs.append((query, passages[(qi * 11 + j * 7) % len(passages)]))  # 16 distinct
            groups.append(qi)
    return pairs, groups


def cache_dir() -> Path:
    """``$CROSSRANK_CACHE/auto`` or ``~/.cache/crossrank/auto``."""
    return hub.cache_dir("auto")


def fingerprint() -> dict[str, Any]:
    """The machine as far as speed goes: CPU, the features its kernels use, threads, versions."""
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "features": sorted(cpu_features()),
        "int8_scheme": int8_scheme(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": ort,
        "crossrank": __version__,
        "calibration": CALIBRATION_VERSION,
    }


def model_identity(model_dir: Path, extra: Sequence[Path] = ()) -> list[Any]:
    """The checkpoint as the cache sees it: resolved path, and name / size / mtime of its
    config and weight files (cheap; a retrained checkpoint changes them)."""
    out: list[Any] = []
    for d in [Path(model_dir), *extra]:
        files = [d / "config.json", *weight_files(d)] if (d / "config.json").exists() else []
        files += sorted(d.glob("adapter_*"))
        out.append(str(d.resolve()))
        out += [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return out


def cache_key(identity: list[Any], options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The cache file's key and the fingerprint it was made on."""
    fp = fingerprint()
    blob = json.dumps([identity, options, fp], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], fp


def _ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    order = np.empty(len(x))
    order[np.argsort(x, kind="stable")] = np.arange(len(x))
    return (np.bincount(inverse, order) / counts)[inverse]  # ties share their mean rank


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (1.0 when both are constant)."""
    ra, rb = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return 1.0 if np.ptp(ra) == np.ptp(rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _run(scorer: Scorer, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, float]:
    scorer(pairs)  # warm-up: allocations, kernel choice, session start, compilation
    t0 = time.perf_counter()
    scores = np.asarray(scorer(pairs), dtype=np.float32)
    return scores, time.perf_counter() - t0


def measure(cands: list[Candidate], build: Callable[[Candidate], Scorer]) -> list[Timing]:
    """Time and check every candidate (the first must be exact torch fp32: the reference)."""
    pairs, groups = calibration_pairs()
    group_ids = np.array(groups)
    timings: list[Timing] = []
    ref: np.ndarray | None = None
    for c in cands:
        try:
            scorer = build(c)
            scores, seconds = _run(scorer, pairs)
        except Exception as exc:  # a candidate that cannot run here is reported, not chosen
            if ref is None:
                raise
            logger.warning("backend='auto': %s could not run: %s", c.describe(), exc)
            timings.append(Timing(c.describe(), 0.0, 0.0, float("inf"), False, str(exc)))
            continue
        finally:
            scorer = None  # noqa: F841  (free the candidate's model before the next loads)
            gc.collect()
            malloc.release()
        if ref is None:
            ref = scores
        rhos = [spearman(ref[group_ids == g], scores[group_ids == g]) for g in set(groups)]
        rho = float(np.mean(rhos))
        timings.append(
            Timing(
                c.describe(),
                len(pairs) / seconds,
                rho,
                float(np.abs(scores - ref).max()),
                rho >= MIN_SPEARMAN,
            )
        )
        logger.info("backend='auto' calibration: %s", timings[-1].as_dict())
    return timings


def _from_cache(data: dict[str, Any]) -> BackendChoice:
    picked = data["choice"]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(picked["dtype"] or "")
    timings = tuple(Timing(**t) for t in picked["timings"])
    return BackendChoice(
        picked["backend"], picked["quantize"], dtype, picked["reason"], timings, "cache"
    )


def measured_choice(
    cands: list[Candidate],
    build: Callable[[Candidate], Scorer],
    *,
    identity: list[Any],
    options: dict[str, Any],
    refresh: bool = False,
) -> BackendChoice:
    """The cached decision for this checkpoint, options and machine, measured on a miss (or
    with ``refresh``) and then written to the cache."""
    key, fp = cache_key(identity, options)
    path = cache_dir() / f"{key}.json"
    if path.is_file() and not refresh:
        try:
            choice = _from_cache(json.loads(path.read_text()))
            logger.info("backend='auto': cached decision %s", path)
            return choice
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("backend='auto': ignoring unreadable cache %s (%s)", path, exc)
    t0 = time.perf_counter()
    choice = pick(measure(cands, build), cands)
    logger.info(
        "backend='auto' measured %d candidates in %.1f s", len(cands), time.perf_counter() - t0
    )
    record = {
        "choice": {
            "backend": choice.backend,
            "quantize": choice.quantize,
            "dtype": _dtype_name(choice.dtype) if choice.dtype is not None else None,
            "reason": choice.reason,
            "timings": [t.as_dict() for t in choice.timings],
        },
        "fingerprint": fp,
        "model": identity[0],
        "options": options,
        "seconds": round(time.perf_counter() - t0, 2),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return choice


def measure_for(
    factory: Callable[..., Any],
    model_dir: Path,
    adapter_dir: Path | None,
    options: dict[str, Any],
) -> Callable[[list[Candidate], bool], BackendChoice]:
    """``backend="auto"``'s measurement for a checkpoint and its options: each candidate is
    ``factory(model_dir, backend=..., ...)`` (the :class:`~crossrank.Reranker` passes itself,
    so this layer imports nothing above it) with the same options."""

    def build(c: Candidate) -> Scorer:
        rr = factory(
            model_dir,
            device="cpu",
            dtype=c.dtype,
            backend=c.backend,
            quantize=c.quantize,
            adapter=adapter_dir,
            show_progress=False,
            **options,
        )

        def score(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
            if rr.backend.n_outputs > 1:  # several cutoff layers: compare the first one's
                layers = rr.compute_layer_scores(pairs)
                return np.asarray(next(iter(layers.values())), dtype=np.float32)
            return np.asarray(rr.compute_score(pairs), dtype=np.float32)

        return score

    def measure(cands: list[Candidate], refresh: bool) -> BackendChoice:
        # read the checkpoint's files only when auto does measure (not on CUDA, not with
        # measuring off)
        identity = model_identity(model_dir, [Path(adapter_dir)] if adapter_dir else [])
        return measured_choice(cands, build, identity=identity, options=options, refresh=refresh)

    return measure
