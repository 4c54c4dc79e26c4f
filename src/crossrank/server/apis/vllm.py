"""vLLM's score and rerank APIs: ``POST /score``, ``/v1/score``, and its body on ``/rerank``.

``/score`` scores pairs (vLLM's rule): ``text_1`` and ``text_2`` are each a string or a list;
a string is a list of one; one ``text_1`` is scored against every ``text_2`` (1 x N), else the
two lists must have the same length and are paired element-wise (N x N). Results keep the
pairs' order. ``/rerank`` is TEI's path: a JSON object with ``documents`` and no ``texts`` is
vLLM's body, read here (a :class:`~.common.SharedRoute`), errors included; any other body is
TEI's.
(vLLM's ``/v1/rerank`` and ``/v2/rerank`` are Cohere's and Jina's bodies, served by those
modules.) Errors: ``{"error": {"message", "type", "param", "code"}}``, ``code`` the HTTP
status. ``usage`` counts the tokens of the scored pairs, as the model's tokenizer made them.
"""

import json
import time
import uuid
from http import HTTPStatus
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from crossrank.reranker import sigmoid
from crossrank.server.apis.common import (
    Fields,
    Request,
    error_responses,
    json_integer,
    ranking,
    shared_route,
)
from crossrank.server.errors import RERANK_STATUSES, BadRequest
from crossrank.server.service import Service

PATHS = frozenset({"/score", "/v1/score"})
#: the path prefixes whose other routes answer in this API's shape (none: /v1/ is Cohere v1's)
PREFIXES: frozenset[str] = frozenset()


class VLLMErrorInfo(BaseModel):
    message: str
    type: str = Field(description="the HTTP status as an error name, e.g. BadRequestError")
    param: str | None = None
    code: int = Field(description="the HTTP status")


class VLLMError(BaseModel):
    error: VLLMErrorInfo


#: the error body's model (for the OpenAPI schema)
ErrorBody = VLLMError


def error_name(status: int) -> str:
    """vLLM's error ``type``: the status phrase as one word ending in Error."""
    try:
        name = HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "Error"
    return name if name.endswith("Error") else name + "Error"


def error_body(message: str, error_type: str, status: int) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_name(status), "param": None, "code": status}
    }


class ScoreData(BaseModel):
    index: int
    object: str = "score"
    score: float


class ScoreUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ScoreResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: ScoreUsage


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    document: RerankDocument
    relevance_score: float


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class VLLMRerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


def is_vllm_rerank(body: bytes) -> bool:
    """A ``/rerank`` body that is vLLM's: a JSON object with ``documents`` and no ``texts``."""
    if b"documents" not in body and b"\\u" not in body:  # most TEI bodies skip the parse
        return False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False  # TEI's route reports it
    return isinstance(data, dict) and "documents" in data and "texts" not in data


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def pairs_of(text_1: list[str], text_2: list[str]) -> list[tuple[str, list[int]]]:
    """vLLM's pairing as groups (query, indices of its texts in ``text_2``), refusing (400)
    lengths that do not pair."""
    if len(text_1) == 1:
        return [(text_1[0], list(range(len(text_2))))]
    if len(text_1) != len(text_2):
        raise BadRequest(
            f"text_1 has {len(text_1)} items and text_2 {len(text_2)}: send one text_1 "
            "(scored against every text_2) or lists of the same length (paired)"
        )
    groups: dict[str, list[int]] = {}
    for i, query in enumerate(text_1):
        groups.setdefault(query, []).append(i)
    return list(groups.items())


def activated(logits: np.ndarray, *flags: bool | None) -> np.ndarray:
    """Sigmoid scores unless the first flag given says otherwise (raw logits)."""
    use = next((f for f in flags if f is not None), True)
    return sigmoid(logits) if use else logits


def router(service: Service) -> APIRouter:
    f = Fields(service.settings)
    #: vLLM's integers (strict), and its -1 for the model's length
    truncate_tokens = Annotated[
        Annotated[int, Field(ge=-1), BeforeValidator(json_integer)] | None,
        Field(description="longest pair in tokens (cut by the model's rule); -1: the model's"),
    ]
    raw = "false: raw logits instead of sigmoid scores"

    class ScoreRequest(Request):
        """vLLM ``POST /score``."""

        model: str | None = Field(None, description="ignored: the server serves one model")
        text_1: f.query | f.listed(f.query, "the queries")  # type: ignore[valid-type]
        text_2: f.text | f.listed(f.text, "the texts")  # type: ignore[valid-type]
        truncate_prompt_tokens: truncate_tokens = None
        use_activation: bool | None = Field(None, description=raw)
        activation: bool | None = Field(None, description="vLLM's older name of use_activation")

    class VLLMRerankRequest(Request):
        """vLLM ``POST /rerank`` (a body with ``documents`` and no ``texts``)."""

        model_config = ConfigDict(json_schema_extra={"not": {"required": ["texts"]}})
        model: str | None = Field(None, description="ignored: the server serves one model")
        query: f.query  # type: ignore[valid-type]
        documents: f.text | f.listed(f.text, "the documents")  # type: ignore[valid-type]
        top_n: Annotated[int, BeforeValidator(json_integer)] = Field(
            0, description="return only the best top_n; 0 or less: all"
        )
        truncate_prompt_tokens: truncate_tokens = None
        use_activation: bool | None = Field(None, description=raw)
        activation: bool | None = Field(None, description="vLLM's older name of use_activation")

    def length(tokens: int | None) -> int | None:
        return tokens if tokens is not None and tokens > 0 else None

    async def score(req: ScoreRequest, request: HTTPRequest) -> Any:
        text_2 = as_list(req.text_2)
        groups = pairs_of(as_list(req.text_1), text_2)
        spec = service.spec(max_length=length(req.truncate_prompt_tokens))
        done = await service.rerank_groups(
            request.receive, [(q, [text_2[i] for i in idx]) for q, idx in groups], spec
        )
        logits = np.zeros(len(text_2), dtype=np.float32)
        for (_, idx), (group_logits, _) in zip(groups, done):
            logits[idx] = group_logits
        scores = activated(logits, req.use_activation, req.activation)
        tokens = sum(t for _, t in done)
        return JSONResponse(
            {
                "id": f"score-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": service.model_name,
                "data": [
                    {"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )

    api = APIRouter(tags=["vLLM"])
    for path, summary in (("/score", "Score pairs"), ("/v1/score", "Score pairs (old path)")):
        api.add_api_route(
            path,
            score,
            methods=["POST"],
            response_model=ScoreResponse,
            responses=error_responses(VLLMError, RERANK_STATUSES),
            summary=f"{summary} (vLLM API)",
            operation_id="vllm_score" + path.replace("/", "_"),
        )

    async def vllm_rerank(req: VLLMRerankRequest, request: HTTPRequest) -> Any:
        docs = as_list(req.documents)
        spec = service.spec(max_length=length(req.truncate_prompt_tokens))
        logits, tokens = await service.rerank(request.receive, req.query, docs, spec)
        scores = activated(logits, req.use_activation, req.activation)
        top = req.top_n if req.top_n > 0 else None
        return JSONResponse(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": service.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": [
                    {
                        "index": i,
                        "document": {"text": docs[i]},
                        "relevance_score": float(scores[i]),
                    }
                    for i in ranking(scores, top)
                ],
            }
        )

    api.add_api_route(
        "/rerank",
        vllm_rerank,
        methods=["POST"],
        response_model=VLLMRerankResponse,
        responses=error_responses(VLLMError, RERANK_STATUSES),
        summary="Rerank documents (vLLM API)",
        route_class_override=shared_route(is_vllm_rerank, error_body),
    )
    return api
