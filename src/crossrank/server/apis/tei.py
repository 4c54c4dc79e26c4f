"""Hugging Face text-embeddings-inference: ``POST /rerank``, errors ``{"error", "error_type"}``."""

from typing import Any, Literal

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from crossrank.reranker import sigmoid
from crossrank.server.apis.common import Fields, Request, error_responses, ranking
from crossrank.server.errors import RERANK_STATUSES
from crossrank.server.service import Service

PATHS = frozenset({"/rerank"})
#: the path prefixes whose other routes answer in this API's shape (TEI's is the default)
PREFIXES: frozenset[str] = frozenset()


class TEIError(BaseModel):
    error: str
    error_type: str


#: the error body's model (for the OpenAPI schema)
ErrorBody = TEIError


def error_body(message: str, error_type: str, status: int) -> dict[str, str]:
    return {"error": message, "error_type": error_type}


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


def router(service: Service) -> APIRouter:
    f = Fields(service.settings)

    class TEIRerankRequest(Request):
        """TEI ``POST /rerank``."""

        query: f.query  # type: ignore[valid-type]
        texts: f.listed(f.text, "the candidate texts")  # type: ignore[valid-type]
        truncate: bool | None = Field(
            None,
            description="cut over-long pairs on the passage side (default); false refuses them",
        )
        truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
            "right", description="which end of the text to cut: right keeps the start"
        )
        raw_scores: bool = Field(False, description="raw logits instead of sigmoid scores")
        return_text: bool = Field(False, description="echo each text in its result")

    api = APIRouter(tags=["TEI"])

    @api.post(
        "/rerank",
        response_model=list[TEIRank],
        responses=error_responses(TEIError, RERANK_STATUSES),
        summary="Rerank texts (Hugging Face text-embeddings-inference API)",
    )
    async def tei_rerank(req: TEIRerankRequest, request: HTTPRequest) -> Any:
        spec = service.spec(truncate=req.truncate, direction=req.truncation_direction.lower())
        logits, _ = await service.rerank(request.receive, req.query, req.texts, spec)
        scores = logits if req.raw_scores else sigmoid(logits)
        return JSONResponse(
            [
                {"index": i, "score": float(scores[i])}
                | ({"text": req.texts[i]} if req.return_text else {})
                for i in ranking(scores)
            ]
        )

    return api
