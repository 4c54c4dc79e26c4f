"""The FastAPI application: the TEI, Cohere, Jina and vLLM routes over one :class:`Service`.

Every client error is a 4xx JSON body in the shape of the route's API (TEI ``{"error",
"error_type"}``, Cohere v1 / Jina ``{"message", "detail"}``, Cohere v2 ``{"message"}``, vLLM
``{"error": {"message", "type", "param", "code"}}``), with its status from the one table of
:mod:`crossrank.server.errors`; an internal fault is a 500 with a request id, never a 4xx.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from crossrank._version import __version__
from crossrank.errors import InputError, missing_extra
from crossrank.server.errors import (
    BadRequest,
    EmptyInput,
    MethodNotAllowed,
    NotFound,
    ServiceError,
)
from crossrank.server.service import Service
from crossrank.server.settings import ServerSettings


def create_app(
    reranker_or_settings: Any | ServerSettings | None = None,
    settings: ServerSettings | None = None,
):
    """The reranking service as an ASGI app.

    Pass a loaded :class:`~crossrank.Reranker` (and optionally settings), or settings naming a
    model, which is then loaded in the background at start-up (``/health`` answers 503 until
    it is loaded and warmed up). ``app.state.crossrank`` is the :class:`Service`.

    Example:
        >>> from crossrank import Reranker  # doctest: +SKIP
        >>> app = create_app(Reranker("BAAI/bge-reranker-v2-m3"), ServerSettings(max_wait_ms=2))  # doctest: +SKIP
        >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.openapi.utils import get_openapi
        from fastapi.routing import APIRoute
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - depends on the environment
        raise missing_extra("server", "fastapi") from None
    from crossrank.server import guard, openapi
    from crossrank.server.apis import cohere_v2, service_routes, tei, v1, vllm
    from crossrank.server.apis.common import SharedRoute

    if isinstance(reranker_or_settings, ServerSettings):
        settings, reranker = reranker_or_settings, None
    else:
        reranker = reranker_or_settings
    service = Service(settings or ServerSettings(), reranker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        starting = asyncio.create_task(service.start())
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
            await service.close()

    app = FastAPI(
        title="crossrank",
        version=__version__,
        description="Cross-encoder reranking with the TEI, Cohere (v1, v2), Jina and vLLM APIs.",
        lifespan=lifespan,
    )
    app.state.crossrank = service
    # vLLM's /rerank route comes before TEI's: it takes vLLM's bodies and passes on the rest
    apis = (vllm, tei, v1, cohere_v2)
    routers = [api.router(service) for api in (*apis, service_routes)]
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    shared = [r for r in routes if isinstance(r, SharedRoute)]
    for route in shared:  # the route whose path it shares gets the other bodies
        type(route).fallback = next(
            r
            for r in routes
            if not isinstance(r, SharedRoute) and r.path == route.path and r.methods & route.methods
        )
    for router in routers:
        app.include_router(router)
    shapes = {path: api.error_body for api in apis for path in api.PATHS}
    error_models = {path: api_error_model(api) for api in apis for path in api.PATHS}
    rerank_paths = frozenset(shapes)
    # an unknown route under an API's prefix (POST /v2/nothing) answers in that API's shape
    shapes |= {prefix: api.error_body for api in apis for prefix in api.PREFIXES}

    def respond(request: Request, exc: BaseException):
        return guard.error_response(shapes, tei.error_body, request.scope, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        kind = EmptyInput if guard.is_empty_error(errors) else InputError
        return respond(request, kind(guard.validation_message(errors)))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = exc.status_code
        kind = {404: NotFound, 405: MethodNotAllowed}.get(code, BadRequest if code < 500 else None)
        if kind is None:
            return respond(request, RuntimeError(f"HTTP {code}: {exc.detail}"))
        return respond(request, kind(str(exc.detail), dict(exc.headers or {})))

    for handled in (ServiceError, InputError):

        @app.exception_handler(handled)
        async def _known(request: Request, exc: Exception):
            return respond(request, exc)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for route in shared:  # FastAPI documents the path's own route only
                alone = get_openapi(title="", version="", routes=[route])
                for method, op in alone["paths"][route.path].items():
                    openapi.merge_operation(schema, route.path, method, op)
            app.openapi_schema = openapi.complete(
                schema,
                service.settings,
                lambda path: error_models.get(path, tei.ErrorBody.model_json_schema()),
            )
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    app.add_middleware(
        guard.Guard,
        service=service,
        shapes=shapes,
        default_shape=tei.error_body,
        routes=rerank_paths | {"/info", "/metrics"},
        json_routes=rerank_paths,
    )
    return app


def api_error_model(api: Any) -> dict[str, Any]:
    """The JSON schema of an API's error body (inline: no ``$ref`` to resolve)."""
    schema = api.ErrorBody.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
