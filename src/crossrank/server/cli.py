"""``crossrank serve``: run the reranking service with uvicorn.

Every flag can also come from the environment: ``--max-wait-ms`` from ``CROSSRANK_MAX_WAIT_MS``,
``--api-key`` from ``CROSSRANK_API_KEY``...; a flag on the command line wins over the variable.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from dataclasses import fields

from crossrank.cli import UsageError, add_model_args, load_reranker
from crossrank.errors import missing_extra
from crossrank.server.settings import ServerSettings

logger = logging.getLogger(__name__)

ENV_PREFIX = "CROSSRANK_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DEFAULTS = {f.name: f.default for f in fields(ServerSettings)}


def env_name(option: str) -> str:
    """``--max-wait-ms`` -> ``CROSSRANK_MAX_WAIT_MS``."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def apply_env(parser: argparse.ArgumentParser) -> list[str]:
    """Use ``CROSSRANK_<FLAG>`` variables as the defaults of ``parser``'s flags.

    Returns the problems found (unreadable booleans), reported when the command runs; typed
    values are converted (and refused, exit 2) by argparse itself.
    """
    problems = []
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest == "help":
            continue
        name = env_name(longs[0])
        if name not in os.environ:
            continue
        value = os.environ[name]
        if isinstance(action, argparse._StoreTrueAction):
            if value.strip().lower() in _TRUE:
                action.default = True
            elif value.strip().lower() in _FALSE:
                action.default = False
            else:
                problems.append(f"{name}={value!r}: expected a boolean (1/0, true/false)")
        else:
            action.default = value  # argparse converts string defaults with the flag's type
            action.required = False
    return problems


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP reranking service (TEI, Cohere and Jina APIs)",
        description="Serve a reranker over HTTP: POST /rerank (TEI), /v1/rerank (Cohere v1, "
        "Jina), /v2/rerank (Cohere v2); GET /health, /info, /metrics, /docs. Every flag can "
        "also be set with the environment variable CROSSRANK_<FLAG> (e.g. CROSSRANK_PORT).",
    )
    add_model_args(p)
    d = _DEFAULTS
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (8080)")
    p.add_argument("--served-model-name", default=None, help="model name in responses")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="padded tokens per forward pass (8192 CPU, 65536 CUDA)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=d["max_wait_ms"],
        help=f"longest wait for a batch to fill ({d['max_wait_ms']:g})",
    )
    p.add_argument(
        "--max-queued-pairs",
        type=int,
        default=d["max_queued_pairs"],
        help=f"queue depth from which requests get 429 ({d['max_queued_pairs']})",
    )
    p.add_argument(
        "--max-client-batch-size",
        type=int,
        default=d["max_client_batch_size"],
        help=f"most documents per request ({d['max_client_batch_size']})",
    )
    p.add_argument(
        "--max-input-chars",
        type=int,
        default=d["max_input_chars"],
        help=f"longest query or document in characters ({d['max_input_chars']})",
    )
    p.add_argument(
        "--payload-limit",
        type=int,
        default=d["payload_limit"],
        help=f"largest request body in bytes ({d['payload_limit']})",
    )
    p.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    p.add_argument(
        "--chunking", action="store_true", help="split long documents into chunks on every route"
    )
    p.add_argument(
        "--max-chunks-per-doc",
        type=int,
        default=d["max_chunks_per_doc"],
        help=f"most chunks per document ({d['max_chunks_per_doc']})",
    )
    p.add_argument(
        "--chunk-overlap",
        type=int,
        default=d["chunk_overlap"],
        help=f"tokens shared by consecutive chunks ({d['chunk_overlap']})",
    )
    p.add_argument(
        "--tokenizer-workers",
        type=int,
        default=d["tokenizer_workers"],
        help=f"tokenizer threads ({d['tokenizer_workers']})",
    )
    p.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=512,
        help="open requests beyond which uvicorn answers 503 (512)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight requests on SIGTERM (30)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the start-up warm-up")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="service log level; access lines are logged at info (info)",
    )
    problems = apply_env(p)
    p.set_defaults(func=cmd_serve, env_problems=problems)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The :class:`ServerSettings` of parsed ``crossrank serve`` arguments."""
    if args.env_problems:
        raise UsageError(args.env_problems[0])
    return ServerSettings(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        batch_size=args.batch_size,
        served_model_name=args.served_model_name,
        max_batch_tokens=args.max_batch_tokens,
        max_wait_ms=args.max_wait_ms,
        max_queued_pairs=args.max_queued_pairs,
        max_client_batch_size=args.max_client_batch_size,
        max_input_chars=args.max_input_chars,
        payload_limit=args.payload_limit,
        api_key=args.api_key,
        chunking=args.chunking,
        max_chunks_per_doc=args.max_chunks_per_doc,
        chunk_overlap=args.chunk_overlap,
        tokenizer_workers=args.tokenizer_workers,
        warmup=not args.no_warmup,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.max_concurrent_requests < 1:
        raise UsageError("--max-concurrent-requests must be positive")
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("server", "uvicorn") from None
    from crossrank.server.app import create_app

    level = getattr(logging, args.log_level.upper())
    for name in ("crossrank.server", "uvicorn"):
        logging.getLogger(name).setLevel(level)
    # load before binding the port: a bad model is one error line and exit 2
    reranker = load_reranker(args, max_batch_tokens=settings.max_batch_tokens, show_progress=False)
    app = create_app(reranker, settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # keep crossrank's logging set-up
        access_log=False,  # the app logs one line per request itself, with its latency
        limit_concurrency=args.max_concurrent_requests,
        timeout_graceful_shutdown=args.graceful_timeout,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn stops accepting on SIGTERM, finishes in-flight requests, runs the shutdown, then
    # re-raises the signal; a no-op handler turns that into a clean exit 0
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0 if server.started else 1
