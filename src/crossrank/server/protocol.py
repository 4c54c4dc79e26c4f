"""Request and response schemas of the APIs the service speaks (pydantic models).

- TEI (text-embeddings-inference): ``POST /rerank``, errors ``{"error", "error_type"}``.
- Cohere v1 and Jina: ``POST /v1/rerank``, errors ``{"message"}``.
- Cohere v2: ``POST /v2/rerank``, errors ``{"message"}``.

Unknown request fields are ignored, as the original services do, so clients that send
extra options (``rank_fields``, ``return_documents`` on v2...) keep working.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- TEI ---------------------------------------------------------------------------------


class TEIRerankRequest(_Request):
    """TEI ``POST /rerank``."""

    query: str = Field(description="the query")
    texts: list[str] = Field(description="the candidate texts")
    truncate: bool | None = Field(
        None,
        description="cut over-long pairs on the passage side (default); false refuses them",
    )
    truncation_direction: Literal["right", "left"] = Field(
        "right", description="which end of the text to cut: right keeps the start"
    )
    raw_scores: bool = Field(False, description="raw logits instead of sigmoid scores")
    return_text: bool = Field(False, description="echo each text in its result")

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        # TEI spells the enum "Right" / "Left"
        return value.lower() if isinstance(value, str) else value


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class TEIError(BaseModel):
    error: str
    error_type: str


# -- Cohere v1 / Jina --------------------------------------------------------------------


class DocumentObject(BaseModel):
    """A document given as an object; only ``text`` is read, other fields are kept."""

    model_config = ConfigDict(extra="allow")
    text: str


class DocumentText(BaseModel):
    text: str


class V1RerankRequest(_Request):
    """Cohere v1 / Jina ``POST /v1/rerank``."""

    model: str | None = Field(None, description="ignored: the server serves one model")
    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = Field(None, ge=1, description="return only the best top_n")
    return_documents: bool = Field(
        True, description="echo each document's text (Jina's default; Cohere clients ignore it)"
    )
    max_chunks_per_doc: int | None = Field(
        None, ge=1, description="split long documents into at most this many chunks"
    )


class V1Result(BaseModel):
    index: int
    relevance_score: float
    document: DocumentText | None = None


class Usage(BaseModel):
    total_tokens: int


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits = BilledUnits()


class V1RerankResponse(BaseModel):
    id: str
    model: str
    results: list[V1Result]
    usage: Usage
    meta: Meta


# -- Cohere v2 ---------------------------------------------------------------------------


class V2RerankRequest(_Request):
    """Cohere v2 ``POST /v2/rerank``."""

    model: str | None = Field(None, description="ignored: the server serves one model")
    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="read at most this many tokens of a document, in chunks"
    )


class V2Result(BaseModel):
    index: int
    relevance_score: float


class V2RerankResponse(BaseModel):
    id: str
    results: list[V2Result]
    meta: Meta


class CohereError(BaseModel):
    message: str


# -- service -----------------------------------------------------------------------------


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "failed"]


class InfoResponse(BaseModel):
    model_id: str
    model_dir: str | None
    backend: str | None
    device: str | None
    dtype: str | None
    max_length: int | None
    max_batch_tokens: int | None
    max_wait_ms: float
    max_queued_pairs: int
    max_client_batch_size: int
    max_input_chars: int
    payload_limit: int
    chunking: bool
    max_chunks_per_doc: int
    chunk_overlap: int
    auth: bool
    ready: bool
    version: str


#: error shape of each route family, for the OpenAPI ``responses`` of the routes
TEI_ERRORS = {code: {"model": TEIError} for code in (400, 401, 413, 422, 424, 429, 503)}
COHERE_ERRORS = {code: {"model": CohereError} for code in (400, 401, 413, 422, 424, 429, 503)}
