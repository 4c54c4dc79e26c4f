"""Cohere v2: ``POST /v2/rerank``, errors ``{"message"}``."""

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crossrank.reranker import sigmoid
from crossrank.server.apis.common import (
    Fields,
    Meta,
    Request,
    error_responses,
    integer,
    meta,
    ranking,
)
from crossrank.server.errors import RERANK_STATUSES
from crossrank.server.service import Service

PATHS = frozenset({"/v2/rerank"})
#: the path prefixes whose other (unknown) routes answer in this API's error shape
PREFIXES = frozenset({"/v2/"})


class CohereError(BaseModel):
    message: str


#: the error body's model (for the OpenAPI schema)
ErrorBody = CohereError


def error_body(message: str, error_type: str, status: int) -> dict[str, str]:
    return {"message": message}


class V2Result(BaseModel):
    index: int
    relevance_score: float


class V2RerankResponse(BaseModel):
    id: str
    results: list[V2Result]
    meta: Meta


def router(service: Service) -> APIRouter:
    f = Fields(service.settings)

    class DocumentText(BaseModel):
        """A document as ``{"text": ...}`` (older clients send it so)."""

        model_config = ConfigDict(extra="ignore", strict=True)
        text: f.text  # type: ignore[valid-type]

    class V2RerankRequest(Request):
        """Cohere v2 ``POST /v2/rerank``."""

        model: str | None = Field(None, description="ignored: the server serves one model")
        query: f.query  # type: ignore[valid-type]
        documents: f.listed(f.text | DocumentText, "the documents")  # type: ignore[valid-type]
        top_n: f.top_n = None  # type: ignore[valid-type]
        max_tokens_per_doc: integer(  # type: ignore[valid-type]
            "read at most this many tokens of a document, in chunks"
        ) = None

    api = APIRouter(tags=["Cohere v2"])

    @api.post(
        "/v2/rerank",
        response_model=V2RerankResponse,
        responses=error_responses(CohereError, RERANK_STATUSES),
        summary="Rerank documents (Cohere v2 API)",
    )
    async def v2_rerank(req: V2RerankRequest, request: HTTPRequest) -> Any:
        texts = [d if isinstance(d, str) else d.text for d in req.documents]
        spec = service.spec(max_tokens_per_doc=req.max_tokens_per_doc)
        logits, _ = await service.rerank(request.receive, req.query, texts, spec)
        scores = sigmoid(logits)
        results = [
            {"index": i, "relevance_score": float(scores[i])} for i in ranking(scores, req.top_n)
        ]
        return JSONResponse({"id": str(uuid.uuid4()), "results": results, "meta": meta("2")})

    return api
