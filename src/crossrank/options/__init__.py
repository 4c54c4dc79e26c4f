"""The options of a :class:`~crossrank.Reranker`, each declared once.

:class:`Options` has one field per option: its type and default, and in the field's metadata
(:func:`option`) its help text, its check, whether it can be given per call
(``compute_score(..., prompt=...)``), whether only some families honour it (those whose
``Family.options`` name it), its command-line flag and its old names. From these come:

- the constructor's and every method's check (:func:`parse`: unknown names, old names, values
  (:mod:`crossrank.options.checks`); a mistake is one :class:`~crossrank.errors.InputError`
  naming the option, before the model loads);
- in :mod:`crossrank.options.views`: the Reranker's signatures and docstring, the flags of
  every command that loads a model (``add_flags``, ``from_args``), so
  ``crossrank score/rank/eval/serve/backends`` and the Ray options
  (:mod:`crossrank.distributed.cli`) and the server's settings
  (:class:`~crossrank.server.settings.ServerSettings` ``options``) carry every flagged option;
- the table of options in docs/python-api.md (``options_table``; a test checks the page carries it).

Long documents are one option object, :class:`ChunkSpec` (``chunking=``); its fields keep the
names they have everywhere (``max_chunks_per_doc``, ``max_tokens_per_doc``, ``chunk_overlap``),
and these are also accepted as keywords of their own.

Adding an option: one field of :class:`Options` (or of :class:`ChunkSpec`), plus its use.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from crossrank.errors import InputError
from crossrank.options.checks import (
    check_bool,
    check_count,
    check_device,
    check_devices,
    check_dtype,
    check_layers,
    check_path,
    check_positive,
    check_text,
    one_of,
)

if TYPE_CHECKING:
    import torch


def option(
    default: Any,
    help: str,
    *,
    check: Callable[[str, Any], Any],
    per_call: bool = False,
    family: bool = False,
    flag: Mapping[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
    work: bool = True,
) -> Any:
    """A field of :class:`Options` (or :class:`ChunkSpec`).

    ``check`` validates a given value and returns what is kept; ``per_call``: the methods take
    it too, overriding the constructor's for one call; ``family``: only the families that list
    it in ``Family.options`` honour it; ``flag``: the keywords of its ``--flag`` (dashes for
    underscores) on every command that loads a model (None: no flag); ``aliases``: other
    keywords accepted for it (for :class:`ChunkSpec`: its fields, given on their own);
    ``work``: it changes the work ``backend="auto"`` measures (part of its cache key).
    """
    meta = {
        "help": help,
        "check": check,
        "per_call": per_call,
        "family": family,
        "flag": dict(flag) if flag is not None else None,
        "aliases": aliases,
        "work": work,
    }
    return field(default=default, metadata=meta)


# -- long documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkSpec:
    """How documents are fitted to the model: truncation (the default), or windows scored
    separately, a document scoring its best window's score ("max-p").

    Example:
        >>> ChunkSpec(max_chunks_per_doc=4).chunked
        True
    """

    #: most windows per document; 1 = plain truncation
    max_chunks_per_doc: int = option(
        1,
        "score a passage longer than fits by its best window, of at most N windows",
        check=check_positive,
        flag={"type": int, "default": None},
    )
    #: tokens shared by consecutive windows (at most half a window)
    chunk_overlap: int = option(
        32,
        "tokens shared by consecutive windows (at most half a window)",
        check=check_count,
        flag={"type": int, "default": None},
    )
    #: read at most this many tokens of a document (Cohere's ``max_tokens_per_doc``)
    max_tokens_per_doc: int | None = option(
        None,
        "read at most N tokens of each passage",
        check=check_positive,
        flag={"type": int, "default": None},
    )
    #: with one window, which end to cut: "right" keeps the start of the document
    direction: str = option(
        "right", "which end of a document truncation cuts", check=one_of("right", "left")
    )
    #: False: refuse over-long pairs instead of cutting them (TEI ``truncate: false``)
    truncate: bool = option(True, "False: refuse over-long pairs", check=check_bool)
    #: longest pair in tokens (vLLM's ``truncate_prompt_tokens``); None: the model's
    max_length: int | None = option(
        None, "longest pair in tokens for these documents", check=check_positive
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, f.metadata["check"](f.name, value))

    @property
    def chunked(self) -> bool:
        return self.max_chunks_per_doc > 1

    @property
    def plain(self) -> bool:
        """True when this is the library's own rule (exactly ``PairEncoding.encode``)."""
        return (
            self.max_chunks_per_doc == 1
            and self.max_tokens_per_doc is None
            and self.direction == "right"
            and self.truncate
        )


def check_chunking(name: str, value: Any) -> ChunkSpec:
    if isinstance(value, ChunkSpec):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {f.name for f in fields(ChunkSpec)})
        if unknown:
            raise InputError(f"{name}: unknown field {unknown[0]!r} of ChunkSpec")
        return ChunkSpec(**value)
    raise InputError(f"{name} must be a ChunkSpec (or a mapping of its fields), got {value!r}")


# -- the options ------------------------------------------------------------------------------

_TEXT = {"default": None}


@dataclass(frozen=True)
class Options:
    """Every option of a :class:`~crossrank.Reranker` (see the module docstring).

    Also the option set a family turns into its input rules and score
    (``LoadedModel.scoring``): ``max_length`` is then the model's (clamped) one and
    ``cutoff_layers`` a tuple; ``max_length`` comes first (``ScoreOptions(256)``).
    """

    max_length: int = option(
        512,
        "longest pair in tokens, special tokens included (clamped, with a warning, to what "
        "the model's position table allows)",
        check=check_positive,
        per_call=True,
        flag={"type": int},
    )
    device: str | torch.device | None = option(
        None,
        "cpu, cuda, cuda:1...; default CUDA when available",
        check=check_device,
        flag=_TEXT,
        work=False,
    )
    dtype: str | torch.dtype | None = option(
        None,
        "fp32 (default), fp16 or bf16 (fp16 is refused on the CPU)",
        check=check_dtype,
        flag=_TEXT,
        work=False,
    )
    query_max_length: int | None = option(
        None, "longest query in tokens (default max_length * 3 // 4)", check=check_positive
    )
    batch_size: int | None = option(
        None,
        "most pairs in one forward pass (default: only the token budget limits)",
        check=check_positive,
        per_call=True,
        flag={"type": int},
    )
    normalize: bool = option(
        False,
        "sigmoid scores (computed in fp32) instead of raw logits",
        check=check_bool,
        per_call=True,
        flag={"action": "store_true"},
        work=False,
    )
    query_instruction: str | None = option(
        None,
        "text put before every query (LLM families: default 'A: ', as FlagEmbedding)",
        check=check_text,
    )
    passage_instruction: str | None = option(
        None,
        "text put before every passage (LLM families: default 'B: ')",
        check=check_text,
    )
    max_batch_tokens: int | None = option(
        None,
        "padded-token budget of a forward pass (default on the CPU: sized so the widest "
        "activation stays under 16 MiB, e.g. 2048 for MiniLM, 1024 for bge-reranker-base; "
        "512 with backend onnx; 65536 on CUDA)",
        check=check_positive,
    )
    show_progress: bool | None = option(
        None,
        "progress bar on or off (default: on for jobs of 1024 pairs or more, on a terminal)",
        check=check_bool,
        work=False,
    )
    revision: str | None = option(
        None, "hub revision (branch, tag or commit) of a hub id", check=check_text, work=False
    )
    backend: str = option(
        "torch",
        "torch (exact, every family), onnx (encoders: ONNX Runtime, needs crossrank[onnx]), "
        "openvino (encoders: OpenVINO, fp32 or bf16, needs crossrank[openvino]) or "
        "auto (the fastest backend keeping mean per-query Spearman >= 0.99 against fp32, "
        "measured once per machine and cached)",
        check=one_of("torch", "onnx", "openvino", "auto"),
        family=True,
        flag={"choices": ("torch", "onnx", "openvino", "auto")},
        work=False,
    )
    quantize: str | None = option(
        None,
        "int8: int8 linear layers (encoders: with backend onnx; LLM rerankers: backend torch, "
        "on the CPU)",
        check=one_of("int8"),
        family=True,
        flag={"choices": ("int8",), "default": None},
        work=False,
    )
    devices: list[str | torch.device] | None = option(
        None,
        "several devices (cuda:0, cuda:1) to spread big jobs over, one replica each; "
        "overrides device",
        check=check_devices,
        family=True,
        work=False,
    )
    prompt: str | None = option(
        None,
        "the instruction after the pair (default: FlagEmbedding's)",
        check=check_text,
        per_call=True,
        family=True,
        flag=_TEXT,
    )
    cutoff_layers: int | Sequence[int] | None = option(
        None,
        "layer(s) whose head scores, in [start_layer, num_hidden_layers] (default: the last); "
        "compute_score gives the first one's scores, compute_layer_scores all",
        check=check_layers,
        per_call=True,
        family=True,
        flag={"type": int, "nargs": "+", "default": None},
    )
    deterministic: bool = option(
        False,
        "batch-invariant scores: each pair scored alone on one thread (pairs in parallel), so "
        "its score is bitwise the same whatever its batch, neighbours, thread count and "
        "concurrency (torch backend; backend auto then means torch)",
        check=check_bool,
        flag={"action": "store_true"},
    )
    share_prefix: bool = option(
        True,
        "compute each query's prefix keys/values once for all its passages and chunks "
        "(same scores)",
        check=check_bool,
        family=True,
    )
    instruction: str | None = option(
        None,
        "the task instruction of the template (Qwen3-Reranker's Instruct field)",
        check=check_text,
        per_call=True,
        family=True,
        flag=_TEXT,
    )
    adapter: str | os.PathLike[str] | None = option(
        None,
        "LLM families, backend torch: a local PEFT LoRA adapter directory merged into the "
        "model's weights (the model may itself be an adapter directory)",
        check=check_path,
        work=False,
    )
    chunking: ChunkSpec | None = option(
        None,
        "long documents: a ChunkSpec (or its fields max_chunks_per_doc, chunk_overlap, "
        "max_tokens_per_doc given as keywords); default: truncation",
        check=check_chunking,
        per_call=True,
        aliases=("max_chunks_per_doc", "chunk_overlap", "max_tokens_per_doc"),
    )


_FIELDS: dict[str, Field] = {f.name: f for f in fields(Options)}
#: old or part names -> the option they set
ALIASES: dict[str, str] = {a: f.name for f in fields(Options) for a in f.metadata["aliases"]}


def declared() -> list[Field]:
    """The fields of :class:`Options`, in declaration order."""
    return list(_FIELDS.values())


def family_defaults() -> dict[str, Any]:
    """The options only some families honour, with their defaults (their "not given")."""
    return {f.name: f.default for f in declared() if f.metadata["family"]}


def per_call_family_options() -> frozenset[str]:
    """Per-call options that change a family's input rules or score (each distinct set of
    them gets its own tokenizer and backend, over the same weights)."""
    return frozenset(f.name for f in declared() if f.metadata["per_call"] and f.metadata["family"])


def work_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``given`` (checked options) that changes the work backend="auto" measures."""
    return {k: v for k, v in given.items() if _FIELDS[k].metadata["work"]}


def parse(given: Mapping[str, Any], *, per_call: bool = False, base: Any = None) -> dict[str, Any]:
    """Check options given as keywords: names (old names folded into their option), values;
    ``None`` means not given and is dropped. ``per_call``: the options of a method call
    (``base``: the constructor's :class:`ChunkSpec`, which part keywords then adjust).

    Raises :class:`~crossrank.errors.InputError` naming the option.
    """
    out: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for name, value in given.items():
        target = ALIASES.get(name)
        if target is not None:
            if value is not None:
                parts.setdefault(target, {})[name] = value
            continue
        f = _FIELDS.get(name)
        if f is None:
            raise InputError(_unknown(name, per_call))
        if per_call and not f.metadata["per_call"]:
            raise InputError(f"{name} is set when the Reranker is made, not per call")
        if value is not None:
            out[name] = f.metadata["check"](name, value)
    for target, values in parts.items():  # max_chunks_per_doc=8 -> chunking=ChunkSpec(...)
        start = out.get(target, base if base is not None else ChunkSpec())
        out[target] = replace(start, **values)
    return out


def _unknown(name: str, per_call: bool) -> str:
    names = [f.name for f in declared() if f.metadata["per_call"] or not per_call]
    names += list(ALIASES)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = "a per-call option" if per_call else "an option of Reranker"
    return f"{name!r} is not {where}{hint}; see crossrank.options.Options"
