"""Checking and normalising what users pass to :class:`~crossrank.Reranker`: devices and
dtypes, pairs in every shape, documents, positive integers, text that is valid Unicode.

Every mistake becomes a :class:`~crossrank.errors.CrossrankError` (an ``InputError`` for
per-call arguments) naming the argument, never a numpy, torch or tokenizer exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from crossrank.errors import CrossrankError, InputError

Document = str | Mapping[str, Any]

#: dtype names users may give (``dtype=``, ``--dtype``, ``--save-dtype``): the one table
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def dtype_named(name: str | torch.dtype | None, option: str = "dtype") -> torch.dtype:
    """The torch dtype of ``name`` (:data:`DTYPES`, case-insensitive; None is fp32); an unknown
    name is a :class:`~crossrank.errors.CrossrankError` naming ``option``.

    Example:
        >>> dtype_named("bf16")
        torch.bfloat16
    """
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise CrossrankError(f"unknown {option} {name!r}; use one of fp32, fp16, bf16") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CrossrankError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrossrankError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a torch.dtype (default fp32); fp16 on the CPU is refused."""
    resolved = dtype_named(dtype)
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise CrossrankError(f"dtype {resolved} is not supported; use fp32, fp16 or bf16")
    if resolved == torch.float16 and device.type == "cpu":
        raise CrossrankError(
            "fp16 is not supported on the CPU (no half-precision kernels there); "
            "use fp32, or bf16 on CPUs with AMX"
        )
    return resolved


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32."""
    x = np.asarray(x, dtype=np.float32)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` checked to be an int >= ``minimum`` (bools refused), else a clear InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_pairs(pairs: Any) -> list[tuple[str, str]]:
    """``[query, passage]`` pairs from what users pass: one pair, a list / tuple / generator of
    pairs, a 2-D numpy array of strings, or a pandas-like object with ``.values``."""
    values = getattr(pairs, "values", None)  # pandas DataFrame: its 2-D array
    if isinstance(values, np.ndarray):
        pairs = values
    if isinstance(pairs, np.ndarray):
        if pairs.ndim == 1 and pairs.shape[0] == 2:
            pairs = pairs[None, :]
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise InputError(f"a pairs array must have shape [n, 2], got {list(pairs.shape)}")
        pairs = pairs.tolist()
    elif isinstance(pairs, (str, bytes)):
        raise InputError("pairs must be [query, passage] pairs, got a single string")
    elif isinstance(pairs, Mapping) or not isinstance(pairs, Iterable):
        raise InputError(
            f"pairs must be an iterable of [query, passage] pairs, got {type(pairs).__name__}"
        )
    items = pairs if isinstance(pairs, Sequence) else list(pairs)
    if (
        len(items) == 2
        and any(isinstance(x, str) for x in items)
        and not any(map(_pairlike, items))
    ):
        # one pair (a list of pairs holds no strings): ["q", None] is pair 0 with no passage
        return [_pair(0, items)]
    out = []
    for i, pair in enumerate(items):
        if isinstance(pair, (str, bytes, Mapping)) or not isinstance(pair, Iterable):
            raise InputError(f"pair {i} is not a [query, passage] pair: {pair!r:.80}")
        out.append(_pair(i, tuple(pair)))
    return out


def _pairlike(x: Any) -> bool:
    return isinstance(x, Iterable) and not isinstance(x, (str, bytes, Mapping))


def _pair(i: int, pair: Sequence[Any]) -> tuple[str, str]:
    """Pair ``i`` as two strings, else an InputError saying which part is wrong and what it is."""
    if len(pair) != 2:
        raise InputError(f"pair {i} must be two strings [query, passage]: {pair!r:.80}")
    for part, x in zip(("query", "passage"), pair):
        if not isinstance(x, str):
            name = type(x).__name__
            what = (
                "None" if x is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name} ({x!r:.60})"
            )
            raise InputError(
                f"pair {i}: the {part} is {what}, not a string; "
                "a pair is two strings [query, passage]"
            )
    return (pair[0], pair[1])


def as_documents(documents: Any, where: str = "documents") -> list[Document]:
    """A list of documents (strings or mappings with ``text``); a lone string is refused."""
    if isinstance(documents, (str, bytes)):
        raise InputError(f"{where} must be a list of documents, got a single string")
    if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
        raise InputError(f"{where} must be a list of documents, got {type(documents).__name__}")
    return list(documents)


def check_text(texts: Iterable[str], what: str) -> None:
    """Raise an InputError for the first text that is not valid Unicode (lone surrogates)."""
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"{what} {i} is not valid Unicode: {exc.reason} at {exc.start}"
            ) from None


def document_text(doc: Document, index: int) -> str:
    """The text of a document given as a string or a mapping with ``text``."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
        return doc["text"]
    raise InputError(f"document {index} must be a string or a mapping with a 'text' string")


def as_layers(cutoff_layers: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``cutoff_layers`` as a tuple of ints (checked against the model by its family)."""
    if cutoff_layers is None:
        return None
    if isinstance(cutoff_layers, (int, np.integer)) and not isinstance(cutoff_layers, bool):
        return (int(cutoff_layers),)
    if isinstance(cutoff_layers, (str, bytes)) or not isinstance(cutoff_layers, Iterable):
        raise InputError(f"cutoff layers must be an int or a list of ints, got {cutoff_layers!r}")
    layers = tuple(cutoff_layers)
    if not layers or not all(
        isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in layers
    ):
        raise InputError(f"cutoff layers must be an int or a list of ints, got {cutoff_layers!r}")
    return tuple(int(x) for x in layers)
