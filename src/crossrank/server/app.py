"""The FastAPI application: TEI, Cohere and Jina rerank routes over one :class:`Scheduler`.

Every client error is a 4xx JSON body in the shape of the route's API (TEI
``{"error", "error_type"}``, Cohere / Jina ``{"message"}``); no client input produces a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from crossrank._version import __version__
from crossrank.errors import CrossrankError, InputError, missing_extra
from crossrank.reranker import sigmoid
from crossrank.server.chunking import ChunkSpec
from crossrank.server.metrics import Metrics
from crossrank.server.protocol import (
    COHERE_ERRORS,
    TEI_ERRORS,
    HealthResponse,
    InfoResponse,
    TEIRank,
    TEIRerankRequest,
    V1RerankRequest,
    V1RerankResponse,
    V2RerankRequest,
    V2RerankResponse,
)
from crossrank.server.scheduler import BackendError, Overloaded, Scheduler, Stopped
from crossrank.server.settings import ServerSettings

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("crossrank.server.access")

#: routes reachable without the API key
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
#: metric label of each known path (anything else is "other": bounded label values)
ROUTES = frozenset({"/rerank", "/v1/rerank", "/v2/rerank", "/info", "/metrics"} | OPEN_PATHS)
#: routes whose body is always read as JSON, whatever its content type says
JSON_ROUTES = frozenset({"/rerank", "/v1/rerank", "/v2/rerank"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ApiError(Exception):
    """An HTTP error answered in the route's API shape."""

    def __init__(
        self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or {}


def error_body(path: str, message: str, error_type: str) -> dict[str, str]:
    """``{"message"}`` on the Cohere / Jina routes, ``{"error", "error_type"}`` elsewhere."""
    if path.startswith(("/v1/", "/v2/")):
        return {"message": message}
    return {"error": message, "error_type": error_type}


class _State:
    """What the routes share: settings, metrics, the model and its scheduler."""

    def __init__(self, settings: ServerSettings, reranker: Any | None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.reranker = reranker
        self.scheduler: Scheduler | None = None
        self.ready = False
        self.failed: str | None = None
        name = settings.served_model_name or settings.model
        if name is None and reranker is not None:
            name = reranker.model_name
        self.model_name = name or "unknown"

    async def start(self) -> None:
        """Load the model (unless given), start the scheduler, warm up; then report ready."""
        s = self.settings
        try:
            if self.reranker is None:
                if s.model is None:
                    raise CrossrankError("no model: pass a Reranker or settings.model")
                from crossrank.reranker import Reranker

                self.reranker = await asyncio.to_thread(
                    Reranker,
                    s.model,
                    device=s.device,
                    dtype=s.dtype,
                    max_length=s.max_length,
                    batch_size=s.batch_size,
                    max_batch_tokens=s.max_batch_tokens,
                    show_progress=False,
                )
            self.scheduler = Scheduler(
                self.reranker,
                self.metrics,
                max_batch_tokens=s.max_batch_tokens,
                max_wait_ms=s.max_wait_ms,
                max_queued_pairs=s.max_queued_pairs,
                tokenizer_workers=s.tokenizer_workers,
            )
            self.scheduler.start()
            if s.warmup:
                passages = ["warm-up passage", "warm-up passage " * 64]
                await self.scheduler.score("warm-up query", passages, ChunkSpec())
        except Exception as exc:  # reported by /health and the log, never a crash
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.error("the model could not be started: %s", self.failed)
            return
        self.ready = True
        logger.info("model %s ready", self.model_name)

    def spec(
        self,
        *,
        max_chunks: int | None = None,
        max_doc_tokens: int | None = None,
        truncate: bool | None = None,
        direction: str = "right",
    ) -> ChunkSpec:
        s = self.settings
        if max_chunks is None and (s.chunking or max_doc_tokens is not None):
            max_chunks = s.max_chunks_per_doc
        return ChunkSpec(
            max_chunks=min(max_chunks or 1, s.max_chunks_per_doc),
            overlap=s.chunk_overlap,
            max_doc_tokens=max_doc_tokens,
            direction=direction,
            truncate=truncate is not False,
        )

    async def rerank(self, query: str, texts: Sequence[str], spec: ChunkSpec) -> tuple[Any, int]:
        """Logits per text (best chunk) and the tokens scored; API errors for bad requests."""
        s = self.settings
        if not self.ready or self.scheduler is None:
            raise ApiError(503, "the model is not ready yet", "Unhealthy")
        if not query.strip():
            raise ApiError(400, "the query is empty", "Empty")
        if not texts:
            raise ApiError(400, "no documents to rank", "Empty")
        if len(texts) > s.max_client_batch_size:
            raise ApiError(
                422,
                f"{len(texts)} documents in one request; at most {s.max_client_batch_size}",
                "Validation",
            )
        if len(query) > s.max_input_chars:
            raise ApiError(
                422, f"the query has more than {s.max_input_chars} characters", "Validation"
            )
        for i, t in enumerate(texts):
            if len(t) > s.max_input_chars:
                raise ApiError(
                    422, f"document {i} has more than {s.max_input_chars} characters", "Validation"
                )
        try:
            return await self.scheduler.score(query, texts, spec)
        except Overloaded as exc:
            raise ApiError(
                429, str(exc), "Overloaded", {"Retry-After": str(exc.retry_after)}
            ) from None
        except InputError as exc:
            raise ApiError(422, str(exc), "Validation") from None
        except BackendError as exc:
            raise ApiError(424, str(exc), "Backend") from None
        except Stopped as exc:
            raise ApiError(503, str(exc), "Unhealthy") from None


def ranking(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices best first (ties keep input order), at most ``top_n``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()
    return order[:top_n] if top_n is not None else order


def _doc_text(doc: Any) -> str:
    return doc if isinstance(doc, str) else doc.text


class _Guard:
    """Pure-ASGI middleware: access log + request metrics, API key, payload limit."""

    def __init__(self, app: Any, state: _State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope["path"]
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_status, path)
        finally:
            elapsed = time.perf_counter() - t0
            route = path if path in ROUTES else "other"
            m = self.state.metrics
            m.requests.labels(route=route, status=str(status[0])).inc()
            m.request_duration.labels(route=route).observe(elapsed)
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                '%s:%s "%s %s HTTP/%s" %d %.1fms',
                client[0],
                client[1],
                scope["method"],
                path,
                scope.get("http_version", "1.1"),
                status[0],
                elapsed * 1000,
            )

    async def _guarded(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        s = self.state.settings
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        if path in JSON_ROUTES and b"json" not in headers.get("content-type", b""):
            # curl -d sends a form content type: the body is still read as JSON, as documented
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope["headers"] if k.lower() != b"content-type"
            ] + [(b"content-type", b"application/json")]
        if s.api_key is not None and path not in OPEN_PATHS:
            scheme, _, token = headers.get("authorization", b"").partition(b" ")
            ok = scheme.lower() == b"bearer" and hmac.compare_digest(
                token.strip(), s.api_key.encode("utf-8")
            )
            if not ok:
                await _send_error(
                    send,
                    path,
                    ApiError(
                        401,
                        "missing or invalid API key (Authorization: Bearer KEY)",
                        "Unauthorized",
                        {"WWW-Authenticate": "Bearer"},
                    ),
                )
                return
        if scope["method"] in _BODY_METHODS:
            too_big = ApiError(
                413, f"the request body exceeds {s.payload_limit} bytes", "PayloadTooLarge"
            )
            length = headers.get("content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    await _send_error(send, path, ApiError(400, "bad Content-Length", "Validation"))
                    return
                if n > s.payload_limit:
                    await _send_error(send, path, too_big)
                    return
            else:  # chunked upload: read it here, never more than the limit
                body, more = bytearray(), True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > s.payload_limit:
                        await _send_error(send, path, too_big)
                        return
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


async def _send_error(send: Any, path: str, err: ApiError) -> None:
    from starlette.responses import JSONResponse

    response = JSONResponse(
        error_body(path, err.message, err.error_type), status_code=err.status, headers=err.headers
    )
    await response({"type": "http"}, None, send)


def _validation_message(errors: Sequence[Any]) -> str:
    parts = []
    for e in list(errors)[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        if e.get("type") == "json_invalid":
            parts.append(f"malformed JSON: {e.get('ctx', {}).get('error', e.get('msg'))}")
        else:
            parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    reranker_or_settings: Any | ServerSettings | None = None,
    settings: ServerSettings | None = None,
):
    """The reranking service as an ASGI app.

    Pass a loaded :class:`~crossrank.Reranker` (and optionally settings), or settings naming a
    model, which is then loaded in the background at start-up (``/health`` answers 503 until
    it is loaded and warmed up).

    Example:
        >>> from crossrank import Reranker  # doctest: +SKIP
        >>> app = create_app(Reranker("BAAI/bge-reranker-v2-m3"), ServerSettings(max_wait_ms=2))  # doctest: +SKIP
        >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - depends on the environment
        raise missing_extra("server", "fastapi") from None

    if isinstance(reranker_or_settings, ServerSettings):
        settings, reranker = reranker_or_settings, None
    else:
        reranker = reranker_or_settings
    state = _State(settings or ServerSettings(), reranker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        starting = asyncio.create_task(state.start())
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
            state.ready = False
            if state.scheduler is not None:
                await asyncio.to_thread(state.scheduler.close)

    app = FastAPI(
        title="crossrank",
        version=__version__,
        description="Cross-encoder reranking with the TEI, Cohere (v1, v2) and Jina APIs.",
        lifespan=lifespan,
    )
    app.state.crossrank = state

    def shaped(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(request.url.path, err.message, err.error_type),
            status_code=err.status,
            headers=err.headers,
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return shaped(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return shaped(request, ApiError(422, _validation_message(exc.errors()), "Validation"))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "Validation")
        return shaped(request, ApiError(exc.status_code, str(exc.detail), kind, exc.headers))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return shaped(request, ApiError(500, "internal server error", "Internal"))

    @app.post(
        "/rerank",
        response_model=list[TEIRank],
        response_model_exclude_none=True,
        responses=TEI_ERRORS,
        tags=["TEI"],
        summary="Rerank texts (Hugging Face text-embeddings-inference API)",
    )
    async def tei_rerank(req: TEIRerankRequest) -> Any:
        spec = state.spec(truncate=req.truncate, direction=req.truncation_direction)
        logits, _ = await state.rerank(req.query, req.texts, spec)
        scores = logits if req.raw_scores else sigmoid(logits)
        return [
            {"index": i, "score": float(scores[i])}
            | ({"text": req.texts[i]} if req.return_text else {})
            for i in ranking(scores)
        ]

    @app.post(
        "/v1/rerank",
        response_model=V1RerankResponse,
        response_model_exclude_none=True,
        responses=COHERE_ERRORS,
        tags=["Cohere v1 / Jina"],
        summary="Rerank documents (Cohere v1 and Jina API)",
    )
    async def v1_rerank(req: V1RerankRequest) -> Any:
        texts = [_doc_text(d) for d in req.documents]
        spec = state.spec(max_chunks=req.max_chunks_per_doc)
        logits, tokens = await state.rerank(req.query, texts, spec)
        scores = sigmoid(logits)
        results = []
        for i in ranking(scores, req.top_n):
            row: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                row["document"] = {"text": texts[i]}
            results.append(row)
        return {
            "id": str(uuid.uuid4()),
            "model": state.model_name,
            "results": results,
            "usage": {"total_tokens": tokens},
            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
        }

    @app.post(
        "/v2/rerank",
        response_model=V2RerankResponse,
        responses=COHERE_ERRORS,
        tags=["Cohere v2"],
        summary="Rerank documents (Cohere v2 API)",
    )
    async def v2_rerank(req: V2RerankRequest) -> Any:
        texts = [_doc_text(d) for d in req.documents]
        spec = state.spec(max_doc_tokens=req.max_tokens_per_doc)
        logits, _ = await state.rerank(req.query, texts, spec)
        scores = sigmoid(logits)
        return {
            "id": str(uuid.uuid4()),
            "results": [
                {"index": i, "relevance_score": float(scores[i])}
                for i in ranking(scores, req.top_n)
            ],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse}},
        tags=["service"],
    )
    async def health() -> Any:
        if state.ready:
            return {"status": "ok"}
        return JSONResponse({"status": "failed" if state.failed else "loading"}, status_code=503)

    @app.get("/info", response_model=InfoResponse, tags=["service"])
    async def info() -> Any:
        s, rr = state.settings, state.reranker
        return {
            "model_id": state.model_name,
            "model_dir": str(rr.model_dir) if rr is not None else None,
            "backend": rr.backend.name if rr is not None else None,
            "device": str(rr.device) if rr is not None else s.device,
            "dtype": str(rr.dtype).removeprefix("torch.") if rr is not None else s.dtype,
            "max_length": rr.max_length if rr is not None else s.max_length,
            "max_batch_tokens": state.scheduler.max_batch_tokens
            if state.scheduler is not None
            else s.max_batch_tokens,
            "max_wait_ms": s.max_wait_ms,
            "max_queued_pairs": s.max_queued_pairs,
            "max_client_batch_size": s.max_client_batch_size,
            "max_input_chars": s.max_input_chars,
            "payload_limit": s.payload_limit,
            "chunking": s.chunking,
            "max_chunks_per_doc": s.max_chunks_per_doc,
            "chunk_overlap": s.chunk_overlap,
            "auth": s.api_key is not None,
            "ready": state.ready,
            "version": __version__,
        }

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Any:  # (annotations name module-level types only: FastAPI reads them)
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(_Guard, state=state)
    return app
