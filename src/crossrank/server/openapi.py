"""The OpenAPI document, completed with what the app enforces outside the routes' bodies.

FastAPI derives the bodies' limits from the request models; this adds what the middleware
does: with an API key, the bearer ``securitySchemes`` and a documented 401 on every route
that needs the key; the 413 of the body limit on the routes that take a body. Where two routes
serve one path by body (vLLM's body on TEI's ``/rerank``), :func:`merge_operation` documents
both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossrank.server.guard import OPEN_PATHS
from crossrank.server.settings import ServerSettings


def complete(
    schema: dict[str, Any],
    settings: ServerSettings,
    error_schema_of: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Add security and the middleware's responses to ``schema`` (FastAPI's, in place)."""
    secured = settings.api_key is not None
    if secured:
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's --api-key",
        }
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            error = {
                "content": {"application/json": {"schema": error_schema_of(path)}},
            }
            if method.upper() in ("POST", "PUT", "PATCH"):
                responses.setdefault(
                    "413", {"description": "the body is over the payload limit", **error}
                )
            if secured and path not in OPEN_PATHS:
                op["security"] = [{"bearer": []}]
                responses["401"] = {
                    "description": "missing or invalid API key",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    **error,
                }
    return schema


def merge_operation(
    schema: dict[str, Any], path: str, method: str, other: dict[str, Any]
) -> dict[str, Any]:
    """Document ``other`` (an operation of another route at ``path``) in ``schema``'s operation:
    the request body is one of the two, each response any of the two (in place)."""
    op = schema["paths"][path][method]

    def json_schema(part: dict[str, Any]) -> dict[str, Any] | None:
        return part.get("content", {}).get("application/json", {}).get("schema")

    mine, theirs = json_schema(op["requestBody"]), json_schema(other["requestBody"])
    op["requestBody"]["content"]["application/json"]["schema"] = {"oneOf": [mine, theirs]}
    for status, response in other.get("responses", {}).items():
        have = op.setdefault("responses", {}).setdefault(status, response)
        a, b = json_schema(have), json_schema(response)
        if have is not response and a is not None and b is not None and a != b:
            have["content"]["application/json"]["schema"] = {"anyOf": [a, b]}
    op["summary"] = f"{op.get('summary', '')}; {other.get('summary', '')}".strip("; ")
    return schema
