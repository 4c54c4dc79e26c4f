"""What is derived from the declaration of :mod:`crossrank.options`: the flags of the
commands (:func:`add_flags`, :func:`from_args`), the Reranker's signatures and docstring
(:func:`signature`, :func:`docstring`) and the table of docs/python-api.md (:func:`options_table`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, fields
from typing import Any

from crossrank.options import ALIASES, ChunkSpec, Options, declared, parse

# -- the command line ------------------------------------------------------------------------


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _flagged(cls: type) -> list[Field]:
    return [f for f in fields(cls) if f.metadata["flag"] is not None]


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, chunks: bool = False):
    """Add the flag of every option that has one (``chunks``: those of :class:`ChunkSpec`)."""
    for f in _flagged(ChunkSpec if chunks else Options):
        kw = dict(f.metadata["flag"])
        kw.setdefault("default", f.default)
        extra = "" if kw.get("action") or f.default is None else f" ({_show(f.default)})"
        parser.add_argument(flag_name(f.name), dest=f.name, help=f.metadata["help"] + extra, **kw)


def from_args(args: argparse.Namespace, *, chunks: bool = True) -> dict[str, Any]:
    """The Reranker options of parsed flags (:func:`add_flags`), checked: those set to other
    than their default, and (``chunks``) the ``chunking`` of the chunk flags when any is
    given. A missing attribute is not given."""
    values = vars(args)
    given = {f.name: values.get(f.name) for f in _flagged(Options)}
    given = {k: v for k, v in given.items() if v != _default(k)}
    if chunks:
        given |= {f.name: values.get(f.name) for f in _flagged(ChunkSpec)}
    return parse(given)


def _default(name: str) -> Any:
    return next(f.default for f in declared() if f.name == name)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# -- the docs table -------------------------------------------------------------------------


def _type_name(f: Field) -> str:
    tp = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return tp.replace("torch.", "").replace(" | None", "").replace("os.PathLike[str]", "path")


def options_table(honoured: Mapping[str, Iterable[str]]) -> str:
    """The table of options in docs/python-api.md; ``honoured``: family name -> the options it honours
    (``Family.options``), for the family-specific ones."""
    rows = [
        "| option | type | default | families | per call | flag | meaning |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(f: Field, families: str, per_call: str) -> str:
        flag = f"`{flag_name(f.name)}`" if f.metadata["flag"] is not None else ""
        default = "none" if f.default is None else f"`{f.default!r}`"
        cells = [f"`{f.name}`", f"`{_type_name(f)}`", default, families, per_call, flag]
        cells.append(f.metadata["help"])
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    for f in declared():
        families = "all"
        if f.metadata["family"]:
            families = ", ".join(sorted(n for n, opts in honoured.items() if f.name in opts))
        rows.append(row(f, families, "yes" if f.metadata["per_call"] else ""))
    rows += [row(f, "all", "in chunking") for f in _flagged(ChunkSpec)]
    return "\n".join(rows) + "\n"


def _optional(tp: str) -> str:
    return tp if tp.endswith("| None") else f"{tp} | None"


def signature(function: Callable[..., Any], *, per_call: bool) -> Callable[..., Any]:
    """Give ``function`` (``def f(self, x, **options)``) the signature with every option as
    a keyword (the per-call ones, old names included, with ``per_call``), so ``help()`` and
    ``inspect.signature`` show the real arguments; returns ``function``."""
    import inspect

    sig = inspect.signature(function)
    head = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(f.name, kw, default=f.default, annotation=f.type)
        if not per_call
        else inspect.Parameter(f.name, kw, default=None, annotation=_optional(f.type))
        for f in declared()
        if f.metadata["per_call"] or not per_call
    ]
    if per_call:
        params += [inspect.Parameter(a, kw, default=None, annotation="int | None") for a in ALIASES]
    function.__signature__ = sig.replace(parameters=[*head, *params])  # type: ignore[attr-defined]
    return function


def docstring() -> str:
    """The options as a docstring section (appended to :class:`~crossrank.Reranker`'s)."""
    lines = ["Options (keywords; those marked per call are also taken by the methods):"]
    for f in declared():
        meta = f.metadata
        notes = [f"default {f.default!r}"]
        if meta["family"]:
            notes.append("some families")
        if meta["per_call"]:
            notes.append("per call")
        lines.append(f"    {f.name} ({', '.join(notes)}): {meta['help']}.")
    return "\n".join(lines) + "\n"
