"""The outermost layer of the app: request ids, errors, the access log, auth and the body limit.

A pure-ASGI middleware (no body buffering, no task per request). Every error response is made
by :func:`error_response` from the table of :mod:`crossrank.server.errors`, in the body shape
of the route's API.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

from crossrank.server.errors import (
    BadRequest,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    headers_of,
    message_of,
    status_of,
)
from crossrank.server.service import Service

logger = logging.getLogger("crossrank.server")
access_logger = logging.getLogger("crossrank.server.access")

#: routes reachable without the API key
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: an API's error body, ``(message, error_type, status) -> dict``
ErrorBody = Callable[[str, str, int], dict]
#: path -> error body of its API; a key ending in ``/`` is a prefix: the paths under it
ErrorShapes = Mapping[str, ErrorBody]


def request_id(scope: Mapping[str, Any]) -> str:
    return scope.get("state", {}).get("request_id", "-")


def error_response(
    shapes: ErrorShapes, default: ErrorBody, scope: Mapping, exc: BaseException
) -> JSONResponse:
    """The response to ``exc``: its status from the table, the body in the route's shape.

    A route that reads a body as another API's than its path's (vLLM's body on TEI's
    ``/rerank``) sets ``error_body`` in the request's state for the rest of the request.

    An exception the table does not know is the server's fault: logged with its traceback and
    the request id, answered 500 with the request id (never blamed on the client).
    """
    status, error_type = status_of(exc)
    rid = request_id(scope)
    message = message_of(exc)
    if status == 500:
        logger.error(
            "internal error on %s %s [request %s]",
            scope.get("method"),
            scope.get("path"),
            rid,
            exc_info=exc,
        )
        message = f"internal server error (request id {rid}; the server log has the details)"
    shape = scope.get("state", {}).get("error_body") or shape_of(
        shapes, default, scope.get("path", "")
    )
    body = shape(message, error_type, status)
    return JSONResponse(body, status_code=status, headers=headers_of(exc))


def shape_of(shapes: ErrorShapes, default: ErrorBody, path: str) -> ErrorBody:
    """The error body of ``path``: its own route's, else the longest prefix's, else ``default``.

    An exact path comes first (vLLM's ``/v1/score`` stays vLLM's under Cohere v1's ``/v1/``).
    """
    if path in shapes:
        return shapes[path]
    prefixes = [p for p in shapes if p.endswith("/") and path.startswith(p)]
    return shapes[max(prefixes, key=len)] if prefixes else default


class Guard:
    """Request id + access log + metrics, errors, API key, payload limit, shutdown 503s."""

    def __init__(
        self,
        app: Any,
        service: Service,
        shapes: ErrorShapes,
        default_shape: ErrorBody,
        routes: frozenset[str],
        json_routes: frozenset[str],
    ) -> None:
        self.app = app
        self.service = service
        self.shapes = shapes
        self.default_shape = default_shape
        self.routes = routes | OPEN_PATHS
        self.json_routes = json_routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:16]
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), "request_id": rid}
        path = scope["path"]
        status = [0]

        async def send_tagged(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._guarded(scope, receive, send_tagged)
        except asyncio.CancelledError:
            if not (self.service.stopping and status[0] == 0):
                raise
            # uvicorn cancels what is left when the graceful timeout ends: answer, quietly
            await self._error(scope, send_tagged, Unavailable("the server shut down first"))
        except Exception as exc:
            if status[0] == 0:
                await self._error(scope, send_tagged, exc)
            else:  # the response had started: nothing more can be said to the client
                logger.error("error after the response started [request %s]", rid, exc_info=exc)
        finally:
            elapsed = time.perf_counter() - t0
            route = path if path in self.routes else "other"
            m = self.service.metrics
            m.requests.labels(route=route, status=str(status[0] or 500)).inc()
            m.request_duration.labels(route=route).observe(elapsed)
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                '%s:%s "%s %s HTTP/%s" %d %.1fms [%s]',
                client[0],
                client[1],
                scope["method"],
                path,
                scope.get("http_version", "1.1"),
                status[0] or 500,
                elapsed * 1000,
                rid,
            )

    async def _error(self, scope: dict, send: Any, exc: BaseException) -> None:
        response = error_response(self.shapes, self.default_shape, scope, exc)
        await response({"type": "http"}, None, send)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        s = self.service.settings
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        if path in self.json_routes and b"json" not in headers.get("content-type", b""):
            # curl -d sends a form content type: the body is still read as JSON, as documented
            scope["headers"] = [
                (k, v) for k, v in scope["headers"] if k.lower() != b"content-type"
            ] + [(b"content-type", b"application/json")]
        if s.api_key is not None and path not in OPEN_PATHS:
            scheme, _, token = headers.get("authorization", b"").partition(b" ")
            ok = scheme.lower() == b"bearer" and hmac.compare_digest(
                token.strip(), s.api_key.encode("utf-8")
            )
            if not ok:
                raise Unauthorized()
        if scope["method"] in _BODY_METHODS:
            too_big = PayloadTooLarge(f"the request body exceeds {s.payload_limit} bytes")
            length = headers.get("content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    raise BadRequest("bad Content-Length")
                if n > s.payload_limit:
                    raise too_big
            else:  # chunked upload: read it here, never more than the limit
                body, more = bytearray(), True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > s.payload_limit:
                        raise too_big
                receive = _replay(bytes(body), receive)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def validation_message(errors: Sequence[Any]) -> str:
    """One line from pydantic's errors (the first five)."""
    parts = []
    for e in list(errors)[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        if e.get("type") == "json_invalid":
            parts.append(f"malformed JSON: {e.get('ctx', {}).get('error', e.get('msg'))}")
        else:
            parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts) or "invalid request"


#: fields whose "too short" error is TEI's 400 "empty" rather than a 422
EMPTY_FIELDS = frozenset({"query", "texts", "documents"})


def is_empty_error(errors: Sequence[Any]) -> bool:
    """True when the only problem is an empty query or an empty list of documents."""
    return bool(errors) and all(
        e.get("type") in ("string_too_short", "too_short")
        and tuple(e.get("loc", ())) in {("body", f) for f in EMPTY_FIELDS}
        for e in errors
    )
