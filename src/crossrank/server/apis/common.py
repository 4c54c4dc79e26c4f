"""Field types built from the settings, and the pieces every API's responses share."""

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import numpy as np
from fastapi import Request as HTTPRequest
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from crossrank.server.settings import ServerSettings


def valid_unicode(text: str) -> str:
    """Refuse strings with lone surrogates (JSON allows ``"\\ud800"``; no tokenizer does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode ({exc.reason} at {exc.start})") from None
    return text


def json_integer(value: Any) -> Any:
    """JSON Schema's integer: ``3`` or ``3.0``; never ``true`` or ``"3"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    return value


def integer(description: str) -> Any:
    """An optional integer >= 1, as JSON Schema reads integers (strict: no bools or strings)."""
    positive = Annotated[int, Field(ge=1), BeforeValidator(json_integer)]
    return Annotated[positive | None, Field(description=description)]


class Request(BaseModel):
    """A request body: strict types (``"top_n": true`` is refused), unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


class Fields:
    """The annotated field types of request bodies under ``settings``' limits."""

    def __init__(self, settings: ServerSettings) -> None:
        chars, docs = settings.max_input_chars, settings.max_client_batch_size
        self.max_docs = docs
        self.query = Annotated[
            str,
            Field(min_length=1, max_length=chars, description="the query"),
            AfterValidator(valid_unicode),
        ]
        self.text = Annotated[str, Field(max_length=chars), AfterValidator(valid_unicode)]
        self.top_n = integer("return only the best top_n")

    def listed(self, item: Any, description: str) -> Any:
        """A list of 1 to ``max_client_batch_size`` items."""
        return Annotated[
            list[item], Field(min_length=1, max_length=self.max_docs, description=description)
        ]


def ranking(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices best first (ties keep input order), at most ``top_n``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()
    return order[:top_n] if top_n is not None else order


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits = BilledUnits()


def meta(version: str) -> dict[str, Any]:
    return {"api_version": {"version": version}, "billed_units": {"search_units": 1}}


def error_responses(model: type[BaseModel], statuses: tuple[int, ...]) -> dict[int | str, Any]:
    """The OpenAPI ``responses`` of a route whose errors have the body ``model``."""
    return {code: {"model": model} for code in statuses}


class SharedRoute(APIRoute):
    """A route at another API's path (vLLM's body on TEI's ``/rerank``): it takes the bodies
    :meth:`claims` says are its own, their errors in :meth:`error_body`'s shape, and hands
    the others to ``fallback``, the path's own route. Make the class with
    :func:`shared_route`; the app sets ``fallback`` on it (FastAPI may copy the route object,
    never its class)."""

    fallback: ClassVar[APIRoute | None] = None

    @staticmethod
    def claims(body: bytes) -> bool:
        raise NotImplementedError

    @staticmethod
    def error_body(message: str, error_type: str, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[HTTPRequest], Any]:
        mine = super().get_route_handler()
        theirs: list[Callable[[HTTPRequest], Any]] = []

        async def handler(request: HTTPRequest) -> Response:
            if self.claims(await request.body()):  # the body stays cached for the handler
                request.state.error_body = self.error_body
                return await mine(request)
            if not theirs:
                assert self.fallback is not None, f"no route to share {self.path} with"
                theirs.append(self.fallback.get_route_handler())
            return await theirs[0](request)

        return handler


def shared_route(
    claims: Callable[[bytes], bool], error_body: Callable[[str, str, int], dict[str, Any]]
) -> type[SharedRoute]:
    """A :class:`SharedRoute` class of its own (one per app: the app sets its fallback)."""
    methods = {"claims": staticmethod(claims), "error_body": staticmethod(error_body)}
    return type("SharedRoute", (SharedRoute,), methods)
