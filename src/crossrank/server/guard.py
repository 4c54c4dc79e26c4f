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
    """One line from pydantic's errors, in the request's own field names (``documents[0]``,
    never pydantic's names of union members or validators), at most five problems."""
    parts: list[str] = []
    for problem in _problems(list(errors)):
        if problem not in parts:
            parts.append(problem)
    return "; ".join(parts[:5]) or "invalid request"


#: pydantic's names of the Python types of union members (``str | list[str]``)
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
#: what a union member that is a body model is, in words
_MODEL_WORDS = {
    "DocumentText": "an object with a string text field",
    "DocumentObject": "an object (ranked by its text field or the rank_fields)",
}
#: error types saying the value is of another JSON type than a union member wants
_MISMATCH = frozenset(
    {"string_type", "list_type", "dict_type", "model_type", "model_attributes_type", "int_type"}
    | {"bool_type", "float_type", "is_instance_of", "none_required"}
)


def _is_tag(part: Any) -> bool:
    """A location part that is pydantic's name of a union member or validator, not a field."""
    if not isinstance(part, str):
        return False
    return part in _TYPE_TAGS or not part.replace("_", "a").isalnum() or not part.islower()


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _member(tag: str) -> str:
    """A union member's pydantic name in words: ``list[...]``, ``...str...``, a model."""
    if tag.startswith("list["):
        return "a list of strings"
    if "str" in tag.replace("constrained-str", "str").split("[")[-1] or tag == "str":
        return "a string"
    name = tag.rstrip("]").split(",")[-1].strip()
    return _MODEL_WORDS.get(name, "an object")


def _say(e: Mapping[str, Any]) -> str:
    """One error's complaint in words (no pydantic phrasing such as ``Value error, ``)."""
    kind, ctx, msg = e.get("type", ""), e.get("ctx") or {}, str(e.get("msg", ""))
    if kind == "missing":
        return "required"
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    if kind in ("string_too_short", "too_short"):
        least = ctx.get("min_length", 1)
        unit = "characters" if kind == "string_too_short" else "items"
        return "must not be empty" if least == 1 else f"must have at least {least} {unit}"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} items (got {ctx.get('actual_length')})"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "string_unicode":
        return "not valid Unicode"
    words = {
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "int_type": "must be an integer",
        "bool_type": "must be true or false",
        "float_type": "must be a number",
    }
    if kind in words:
        return words[kind]
    return msg.replace("Value error, ", "").replace("Input should be", "must be")


def _problems(errors: list[Mapping[str, Any]]) -> list[str]:
    """The user's problems: a value that fits no member of a union is one problem ("must be a
    string or ..."); one that has the type of a member gets that member's complaints."""
    out: list[str] = []
    unions: dict[tuple, dict[str, list[tuple[tuple, Mapping[str, Any]]]]] = {}
    for e in errors:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        if e.get("type") == "json_invalid":
            out.append(f"malformed JSON: {(e.get('ctx') or {}).get('error', e.get('msg'))}")
            continue
        at = next((i for i, p in enumerate(loc) if _is_tag(p)), None)
        if at is None:
            where = _path(loc)
            out.append(f"{where}: {_say(e)}" if where else f"request body: {_say(e)}")
            continue
        site, tag = tuple(loc[:at]), str(loc[at])
        rest = tuple(p for p in loc[at + 1 :] if not _is_tag(p))
        unions.setdefault(site, {}).setdefault(tag, []).append((rest, e))
    for site, members in unions.items():
        where = _path(site) or "request body"
        fitting = {
            tag: found
            for tag, found in members.items()
            if any(rest or e.get("type") not in _MISMATCH for rest, e in found)
        }
        if not fitting:
            wanted = []
            for tag in members:
                if _member(tag) not in wanted:
                    wanted.append(_member(tag))
            out.append(f"{where}: must be {' or '.join(wanted)}")
            continue
        for found in fitting.values():
            for rest, e in found:
                out.append(f"{_path(site + rest) or 'request body'}: {_say(e)}")
    return out


#: fields whose "too short" error is TEI's 400 "empty" rather than a 422
EMPTY_FIELDS = frozenset({"query", "texts", "documents"})


def is_empty_error(errors: Sequence[Any]) -> bool:
    """True when the only problem is an empty query or an empty list of documents."""
    return bool(errors) and all(
        e.get("type") in ("string_too_short", "too_short")
        and tuple(e.get("loc", ())) in {("body", f) for f in EMPTY_FIELDS}
        for e in errors
    )
