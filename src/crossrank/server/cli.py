"""``crossrank serve``: run the reranking service with uvicorn.

The flags come from :class:`~crossrank.server.settings.ServerSettings` (and the model flags every
crossrank command shares). Every flag can also come from the environment: ``--max-wait-ms`` from
``CROSSRANK_MAX_WAIT_MS``, ``--api-key`` from ``CROSSRANK_API_KEY``...; a flag on the command
line wins over the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from crossrank.cli_args import UsageError, add_model_args, load_reranker
from crossrank.errors import CrossrankError, missing_extra
from crossrank.server import settings as settings_mod

logger = logging.getLogger(__name__)

ENV_PREFIX = "CROSSRANK_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction)


def env_name(option: str) -> str:
    """``--max-wait-ms`` -> ``CROSSRANK_MAX_WAIT_MS``."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def _long(action: argparse.Action) -> str | None:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs and action.dest != "help" else None


def apply_env(parser: argparse.ArgumentParser) -> list[str]:
    """Use ``CROSSRANK_<FLAG>`` variables as the defaults of ``parser``'s flags.

    Returns the problems found (unreadable booleans), reported when the command runs; typed
    values are converted (and refused, exit 2) by argparse itself. A boolean variable says
    whether its flag is given: ``CROSSRANK_NO_WARMUP=1`` is ``--no-warmup``.
    """
    problems = []
    for action in parser._actions:
        flag = _long(action)
        if flag is None or env_name(flag) not in os.environ:
            continue
        name, value = env_name(flag), os.environ[env_name(flag)]
        if isinstance(action, _FLAG_ACTIONS):
            word = value.strip().lower()
            if word in _TRUE | _FALSE:
                given = word in _TRUE
                action.default = action.const if given else not action.const
            else:
                problems.append(f"{name}={value!r}: expected a boolean (1/0, true/false)")
        else:
            action.default = value  # argparse converts string defaults with the flag's type
            action.required = False
    return problems


def build_serve_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every ``crossrank serve`` flag to ``p`` (without the environment)."""
    add_model_args(p)
    settings_mod.add_arguments(p)
    p.add_argument(
        "--print-settings-table",
        action="store_true",
        help="print the flags as the Markdown table of docs/serving.md and exit",
    )
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP reranking service (TEI, Cohere and Jina APIs)",
        description="Serve a reranker over HTTP: POST /rerank (TEI), /v1/rerank (Cohere v1, "
        "Jina), /v2/rerank (Cohere v2); GET /health, /info, /metrics, /docs. Every flag can "
        "also be set with the environment variable CROSSRANK_<FLAG> (e.g. CROSSRANK_PORT).",
    )
    build_serve_parser(p)
    problems = apply_env(p)
    p.set_defaults(func=cmd_serve, env_problems=problems)


def settings_table() -> str:
    """The flags table of docs/serving.md, derived from the parser and the settings."""
    p = build_serve_parser(argparse.ArgumentParser(add_help=False))
    own = {settings_mod.flag_of(f): f for f in settings_mod.own_fields()}
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for action in p._actions:
        flag = _long(action)
        if flag is None or flag == "--print-settings-table":
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings)
        f = own.get(flag)
        if f is not None:
            meta = f.metadata
            shown = meta["shown"] if meta["shown"] is not None else settings_mod._show(f.default)
            meaning = meta["help"]
        else:
            default = action.default
            if isinstance(action, _FLAG_ACTIONS):
                default = not action.const
            shown, meaning = settings_mod._show(default), action.help or ""
        if action.choices and f is not None:
            meaning += " (" + ", ".join(map(str, action.choices)) + ")"
        rows.append(f"| {names} | `{env_name(flag)}` | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


def cmd_serve(args: argparse.Namespace) -> int:
    if args.print_settings_table:
        sys.stdout.write(settings_table())
        return 0
    if args.env_problems:
        raise UsageError(args.env_problems[0])
    settings = settings_mod.from_args(args)
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("server", "uvicorn") from None
    from crossrank.server.app import create_app

    if args.cutoff_layers is not None and len(args.cutoff_layers) > 1:
        layers = " ".join(map(str, args.cutoff_layers))
        raise UsageError(
            f"--cutoff-layers {layers}: the server gives one score per document; serve one "
            f"cutoff layer (e.g. --cutoff-layers {args.cutoff_layers[0]}), or score several "
            "with crossrank score or Reranker.compute_layer_scores"
        )
    level = getattr(logging, settings.log_level.upper())
    for name in ("crossrank.server", "uvicorn"):
        logging.getLogger(name).setLevel(level)
    # load before binding the port: a bad model is one error line and exit 2
    reranker = load_reranker(args, max_batch_tokens=settings.max_batch_tokens, show_progress=False)
    app = create_app(reranker, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep crossrank's logging set-up
        access_log=False,  # the app logs one line per request itself, with its latency
        limit_concurrency=settings.max_concurrent_requests,
        timeout_graceful_shutdown=settings.graceful_timeout,
        lifespan="on",
    )
    service = app.state.crossrank
    server = make_server(config, service)
    # uvicorn stops accepting on SIGTERM, finishes in-flight requests, runs the shutdown, then
    # re-raises the signal; a no-op handler turns that into a clean exit 0
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if service.failure is not None:  # the warm-up failed: the server stopped at once
        if isinstance(service.failure, CrossrankError):
            raise CrossrankError(f"the model could not be started: {service.failure}")
        print(
            f"crossrank: error: the model could not be started: {service.failed}", file=sys.stderr
        )
        return 1
    return 0 if server.started else 1


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling the app when a shutdown signal arrives, and stopping
        when the model fails to start (never serving 503 "not ready" for ever).

        The app then answers 503 to the queued requests that cannot finish within the
        graceful timeout (uvicorn itself would cancel them when it runs out)."""

        def __init__(self, config, state) -> None:
            super().__init__(config)
            self._state = state
            self._loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets=None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        async def on_tick(self, counter: int) -> bool:
            if self._state.failure is not None:
                return True  # shut down: cmd_serve reports the failure
            return await super().on_tick(counter)

        def handle_exit(self, sig, frame) -> None:
            first = not self.should_exit
            super().handle_exit(sig, frame)
            if first and self._loop is not None:
                # a signal handler may interrupt code holding the scheduler's lock: defer
                self._loop.call_soon_threadsafe(self._state.begin_shutdown)

    return Server


def make_server(config, state):
    """uvicorn's server for ``config``, telling ``state`` (the app's Service) of SIGTERM."""
    return _server_class()(config, state)
