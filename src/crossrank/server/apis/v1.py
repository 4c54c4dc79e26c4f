"""Cohere v1 and Jina: ``POST /v1/rerank``.

Jina's rerank API has Cohere v1's path and request shape, so one route serves both: the
response carries Cohere's fields (``id``, ``meta``) and Jina's (``model``, ``usage``), and an
error body carries Cohere's ``message`` and Jina's ``detail`` (which Jina clients such as
langchain-community's ``JinaRerank`` read).

Documents are strings or objects. With Cohere's ``rank_fields``, an object is ranked by the
named fields joined as ``field: value`` lines in the order given (fields it lacks are skipped;
it needs no ``text`` then); without, by its ``text``, or, if it has none, by all its fields as
``field: value`` lines. A returned document is a string as ``{"text": ...}``, an object whole,
as the client sent it.
"""

import json
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossrank.reranker import sigmoid
from crossrank.server.apis.common import (
    Fields,
    Meta,
    Request,
    error_responses,
    integer,
    meta,
    ranking,
    valid_unicode,
)
from crossrank.server.errors import RERANK_STATUSES
from crossrank.server.service import Service

PATHS = frozenset({"/v1/rerank"})
#: the path prefixes whose other (unknown) routes answer in this API's error shape
PREFIXES = frozenset({"/v1/"})


class V1Error(BaseModel):
    message: str
    detail: str


#: the error body's model (for the OpenAPI schema)
ErrorBody = V1Error


def error_body(message: str, error_type: str, status: int) -> dict[str, str]:
    return {"message": message, "detail": message}


class V1Result(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = Field(
        None, description="{text} for a string document, else the object as sent"
    )


class Usage(BaseModel):
    total_tokens: int


class V1RerankResponse(BaseModel):
    id: str
    model: str
    results: list[V1Result]
    usage: Usage
    meta: Meta


def field_text(value: Any) -> str:
    """A field's value as text: strings as they are, other JSON values as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def document_text(doc: str | dict[str, Any], rank_fields: list[str] | None) -> str:
    """The text a document is ranked by (see the module's docstring)."""
    if isinstance(doc, str):
        return doc
    if not rank_fields and isinstance(doc.get("text"), str):
        return doc["text"]
    keys = rank_fields or list(doc)
    return "\n".join(f"{k}: {field_text(doc[k])}" for k in keys if k in doc)


def router(service: Service) -> APIRouter:
    f = Fields(service.settings)

    class DocumentObject(BaseModel):
        """A document as an object: ranked by ``text`` (or ``rank_fields``), echoed whole."""

        model_config = ConfigDict(extra="allow", strict=True)
        text: f.text | None = None  # type: ignore[valid-type]

        @model_validator(mode="after")
        def _unicode(self) -> "DocumentObject":
            valid_unicode(json.dumps(self.model_extra, ensure_ascii=False))
            return self

    class V1RerankRequest(Request):
        """Cohere v1 / Jina ``POST /v1/rerank``."""

        model: str | None = Field(None, description="ignored: the server serves one model")
        query: f.query  # type: ignore[valid-type]
        documents: f.listed(f.text | DocumentObject, "strings or objects")  # type: ignore[valid-type]
        top_n: f.top_n = None  # type: ignore[valid-type]
        return_documents: bool = Field(
            True, description="echo each document (Jina's default; Cohere clients ignore it)"
        )
        max_chunks_per_doc: integer(  # type: ignore[valid-type]
            "split long documents into at most this many chunks"
        ) = None
        rank_fields: list[str] | None = Field(
            None, description="rank object documents by these fields, as 'field: value' lines"
        )

    api = APIRouter(tags=["Cohere v1 / Jina"])

    @api.post(
        "/v1/rerank",
        response_model=V1RerankResponse,
        responses=error_responses(V1Error, RERANK_STATUSES),
        summary="Rerank documents (Cohere v1 and Jina API)",
    )
    async def v1_rerank(req: V1RerankRequest, request: HTTPRequest) -> Any:
        docs = [
            d if isinstance(d, str) else d.model_dump(exclude_unset=True) for d in req.documents
        ]
        texts = [document_text(d, req.rank_fields) for d in docs]
        spec = service.spec(max_chunks_per_doc=req.max_chunks_per_doc)
        logits, tokens = await service.rerank(request.receive, req.query, texts, spec)
        scores = sigmoid(logits)
        results = []
        for i in ranking(scores, req.top_n):
            row: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                doc = docs[i]
                row["document"] = {"text": doc} if isinstance(doc, str) else doc
            results.append(row)
        return JSONResponse(
            {
                "id": str(uuid.uuid4()),
                "model": service.model_name,
                "results": results,
                "usage": {"total_tokens": tokens},
                "meta": meta("1"),
            }
        )

    return api
