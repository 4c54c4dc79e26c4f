"""The options of the reranking service, each defined once.

Every field of :class:`ServerSettings` carries its help text and its flag; from these come the
``crossrank serve`` flags (:func:`add_arguments`), their ``CROSSRANK_<FLAG>`` environment
variables (:mod:`crossrank.server.cli`), the settings part of ``GET /info``
(:func:`info_settings`) and the flags table of docs/serving.md (``crossrank serve
--print-settings-table``; a test checks the docs carry it).

The model options are the flags every crossrank command shares
(:func:`crossrank.cli_args.add_model_args`, declared in :mod:`crossrank.options`): ``model``
and ``options`` (the :class:`~crossrank.Reranker` options of those flags, checked by the same
declaration) are fields here so that :func:`~crossrank.server.app.create_app` can load a
model itself.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from crossrank.errors import CrossrankError
from crossrank.options import parse as parse_options
from crossrank.options.views import from_args as options_from_args


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    shown: str | None = None,
    info: bool = True,
    shared: bool = False,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    secret: bool = False,
    factory: Any = None,
) -> Any:
    """A settings field: ``help`` and ``flag`` (default ``--<name>``) make its CLI flag.

    ``shown`` is the default as written in help and docs when the value itself says little
    (None); ``info`` lists it in ``/info``; ``shared`` marks the model flags of
    :func:`crossrank.cli_args.add_model_args`; ``minimum`` is checked on construction.
    """
    meta = {
        "help": help,
        "flag": flag,
        "shown": shown,
        "info": info,
        "shared": shared,
        "choices": choices,
        "minimum": minimum,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass
class ServerSettings:
    """Everything the service can be told; every field is a ``crossrank serve`` flag.

    Example:
        >>> ServerSettings(model="BAAI/bge-reranker-v2-m3", max_wait_ms=2).max_wait_ms
        2.0
    """

    # -- the model (shared flags of every crossrank command) -----------------------------
    model: str | None = setting(None, "checkpoint directory or hub id", shared=True, info=False)
    options: dict[str, Any] = setting(
        None,
        "the Reranker's options (crossrank.options: device, dtype, max_length, prompt...)",
        shared=True,
        info=False,
        factory=dict,
    )
    # -- network -------------------------------------------------------------------------
    host: str = setting("127.0.0.1", "address to bind (0.0.0.0 for all interfaces)", info=False)
    port: int = setting(8080, "port", info=False, minimum=0)
    served_model_name: str | None = setting(
        None, "model name in responses and /info", shown="the --model value", info=False
    )
    # -- batching and admission ----------------------------------------------------------
    max_batch_tokens: int | None = setting(
        None,
        "padded tokens per forward pass; /info shows the value in use",
        shown="the engine's: on CPU 512-8192 by model width (2048 for MiniLM), 65536 CUDA",
        minimum=1,
    )
    max_wait_ms: float = setting(
        5.0, "longest the oldest queued pair waits for its batch to fill", minimum=0
    )
    max_queue_wait: float = setting(
        20.0,
        "a request that would wait longer than this many seconds (queued pairs / measured "
        "pairs per second) gets 429 with Retry-After",
        minimum=0,
    )
    max_queued_pairs: int = setting(
        10000, "queued pairs from which new requests get 429 (a second bound)", minimum=1
    )
    max_client_batch_size: int = setting(
        1000, "most documents per request (the server batches them itself)", minimum=1
    )
    max_input_chars: int = setting(100_000, "longest query or document, in characters", minimum=1)
    payload_limit: int = setting(2_000_000, "largest request body, in bytes", minimum=1)
    api_key: str | None = setting(
        None,
        "require Authorization: Bearer KEY on every route but /health and the OpenAPI pages",
        shown="none",
        info=False,
        secret=True,
    )
    # -- long documents ------------------------------------------------------------------
    chunking: bool = setting(False, "chunk long documents on every route, not only on request")
    max_chunks_per_doc: int = setting(
        10, "chunks per document: default with chunking, cap of a request's value", minimum=1
    )
    chunk_overlap: int = setting(
        32, "tokens shared by consecutive chunks (at most half a chunk)", minimum=0
    )
    # -- process -------------------------------------------------------------------------
    tokenizer_workers: int = setting(2, "threads tokenizing requests off the event loop", minimum=1)
    max_concurrent_requests: int = setting(
        512, "open connections/requests beyond which uvicorn answers 503", minimum=1
    )
    graceful_timeout: float = setting(
        30.0,
        "seconds to finish in-flight requests on SIGTERM; those that cannot finish get 503",
        minimum=0,
    )
    warmup: bool = setting(
        True, "skip the start-up warm-up", flag="--no-warmup", shown="off", info=False
    )
    log_level: str = setting(
        "info",
        "service log level; access lines are logged at info",
        choices=("debug", "info", "warning", "error"),
        info=False,
    )

    def __post_init__(self) -> None:
        types = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "options":
                continue
            if float in _base_types(types[f.name]):
                value = float(value)
                setattr(self, f.name, value)
            low = f.metadata["minimum"]
            if low is not None and value < low:
                cmp = "positive" if low == 1 else f">= {low:g}"
                raise CrossrankError(f"{f.name} must be {cmp}, got {value}")
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise CrossrankError(f"{f.name} must be one of {f.metadata['choices']}")
        # checked by their declaration (a mistake is one CrossrankError naming the option)
        self.options = parse_options(self.options)
        if self.port > 65535:
            raise CrossrankError(f"port must be in 0..65535, got {self.port}")
        if self.api_key == "":
            self.api_key = None


def _base_types(tp: Any) -> set[type]:
    args = typing.get_args(tp)
    return {a for a in args if a is not type(None)} if args else {tp}


def flag_of(f: Any) -> str:
    """The CLI flag of a settings field."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def own_fields() -> list[Any]:
    """The fields that are ``crossrank serve``'s own flags (not the shared model flags)."""
    return [f for f in fields(ServerSettings) if not f.metadata["shared"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every field that is not a shared model flag."""
    types = typing.get_type_hints(ServerSettings)
    for f in own_fields():
        meta, flag = f.metadata, flag_of(f)
        default = f.default if f.default is not MISSING else None
        shown = meta["shown"] if meta["shown"] is not None else _show(default)
        help_ = f"{meta['help']} ({shown})"
        (kind,) = _base_types(types[f.name])
        if kind is bool:
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, help=help_)
        else:
            parser.add_argument(
                flag, dest=f.name, type=kind, default=default, choices=meta["choices"], help=help_
            )


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def from_args(args: argparse.Namespace) -> ServerSettings:
    """The settings of parsed ``crossrank serve`` arguments (model flags included: their
    Reranker options are :func:`crossrank.options.from_args`' of the same flags)."""
    values = {f.name: getattr(args, f.name) for f in fields(ServerSettings) if f.name != "options"}
    # the server's chunk settings are its own (a cap and default of each request's)
    options = options_from_args(args, chunks=False)
    return ServerSettings(**values, options=options)


def info_settings(settings: ServerSettings) -> dict[str, Any]:
    """The settings ``GET /info`` reports (never the API key: ``auth`` says whether one is set)."""
    out = {f.name: getattr(settings, f.name) for f in fields(settings) if f.metadata["info"]}
    out["auth"] = settings.api_key is not None
    return out


def info_types() -> dict[str, Any]:
    """Field name -> type of :func:`info_settings`' values (for the /info response schema)."""
    types = typing.get_type_hints(ServerSettings)
    out = {f.name: types[f.name] for f in fields(ServerSettings) if f.metadata["info"]}
    out["auth"] = bool
    return out
