"""The one table from error type to HTTP status (TEI's codes), used by every route.

Raise one of these (or let a :class:`crossrank.errors.InputError` through) and the app answers
with the status and ``error_type`` of :data:`STATUS`, in the body shape of the route's API.
Anything not in the table is a fault of the server: a 500 whose body and log line carry the
request id, never a 4xx that blames the client.
"""

from __future__ import annotations

from crossrank.errors import InputError


class ServiceError(Exception):
    """A refusal the service states itself; ``headers`` go into the response."""

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class EmptyInput(InputError):
    """The query or the list of documents is empty (TEI answers 400)."""


class Unauthorized(ServiceError):
    """The API key is missing or wrong."""

    def __init__(self) -> None:
        super().__init__(
            "missing or invalid API key (Authorization: Bearer KEY)",
            {"WWW-Authenticate": "Bearer"},
        )


class NotFound(ServiceError):
    """No such route."""


class MethodNotAllowed(ServiceError):
    """The route exists, not with this method."""


class PayloadTooLarge(ServiceError):
    """The body is over ``--payload-limit``."""


class BadRequest(ServiceError):
    """An unreadable request (bad ``Content-Length``...)."""


class Overloaded(ServiceError):
    """The queue would make this request wait too long; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class BackendError(ServiceError):
    """The model failed on a batch (a device error; not the client's input)."""


class Unavailable(ServiceError):
    """The model is not loaded yet, or the server is shutting down."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready (nobody reads the response)."""


#: error type -> (HTTP status, ``error_type`` of TEI bodies); the most specific class wins
STATUS: dict[type[BaseException], tuple[int, str]] = {
    EmptyInput: (400, "Empty"),
    BadRequest: (400, "Validation"),
    Unauthorized: (401, "Unauthorized"),
    NotFound: (404, "NotFound"),
    MethodNotAllowed: (405, "MethodNotAllowed"),
    PayloadTooLarge: (413, "PayloadTooLarge"),
    InputError: (422, "Validation"),  # malformed fields, over-long texts, untokenizable input
    BackendError: (424, "Backend"),
    Overloaded: (429, "Overloaded"),
    ClientGone: (499, "ClientClosedRequest"),  # logged and counted; no client reads it
    Unavailable: (503, "Unhealthy"),
}
#: what every other exception is
INTERNAL = (500, "Internal")


def status_of(exc: BaseException) -> tuple[int, str]:
    """The (status, error type) of ``exc`` from :data:`STATUS`; :data:`INTERNAL` if absent."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return INTERNAL


def message_of(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ServiceError) else str(exc)


def headers_of(exc: BaseException) -> dict[str, str]:
    return exc.headers if isinstance(exc, ServiceError) else {}


#: statuses the rerank routes document in their OpenAPI ``responses``
RERANK_STATUSES = (400, 413, 422, 424, 429, 503)
