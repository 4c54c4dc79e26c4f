"""The OpenAPI document, completed with what the app enforces outside the routes' bodies.

FastAPI derives the bodies' limits from the request models; this adds what the middleware
does: with an API key, the bearer ``securitySchemes`` and a documented 401 on every route
that needs the key; the 413 of the body limit on the routes that take a body.
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
