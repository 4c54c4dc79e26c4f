"""HTTP clients of the reranking APIs ``crossrank verify`` can check, with retries.

Each dialect is the request body and the answer of one API (the shapes documented in
docs/serving.md, which crossrank's own server speaks; tests/test_verify_services.py checks
every dialect against it):

========== ============== =====================================================================
dialect    default path   body -> scores
========== ============== =====================================================================
tei        /rerank        ``{query, texts, raw_scores: true}`` -> ``[{index, score}]`` (logits)
cohere-v1  /v1/rerank     ``{query, documents, top_n, return_documents: false}`` -> ``results``
jina       /v1/rerank     as cohere-v1
cohere-v2  /v2/rerank     ``{model, query, documents, top_n}`` -> ``results``
vllm-score /score         ``{text_1: query, text_2: documents}`` -> ``data: [{index, score}]``
vllm-rerank /rerank       ``{query, documents, top_n}`` -> ``results``
llamacpp   /v1/rerank     llama.cpp's ``llama-server --reranking``: as cohere-v1 (raw scores)
========== ============== =====================================================================

A 429, 502, 503 or 504 answer, a timeout or a dropped connection is retried (``retries``
times, waiting ``Retry-After`` when the service gives it, else 0.5 s doubling up to 10 s).
401, 403, 404 and 405 (a wrong key or URL) and an unreachable service stop the run with a
:class:`ServiceError`; any other refusal (400, 413, 422: e.g. an input longer than the
service's context) or 5xx fails that request's query for that candidate
(:class:`ServiceFailure`, counted in the report). A candidate whose every query failed stops
the run with a :class:`ServiceError` naming the first error (a wrong dialect, most likely).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from crossrank.errors import CrossrankError

logger = logging.getLogger(__name__)

#: statuses worth another try
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: statuses that say the client is set up wrong (key, URL, method): the run stops
CONFIG_STATUSES = frozenset({401, 403, 404, 405})
MAX_BACKOFF_S = 10.0


class ServiceError(CrossrankError):
    """A service refused the requests (a user's configuration problem: URL, dialect, key)."""


class ServiceFailure(RuntimeError):
    """A service failed one request after its retries (counted as a failed query)."""


def _results(body: Any, field: str, score: str) -> list[tuple[int, float]]:
    items = body[field] if field else body
    return [(int(x["index"]), float(x[score])) for x in items]


@dataclass(frozen=True)
class Dialect:
    """One API: its default path, request body and where the scores are in the answer."""

    path: str
    body: Callable[[str, Sequence[str], str | None], dict[str, Any]]
    parse: Callable[[Any], list[tuple[int, float]]]
    scale: str | None = None


def _cohere_body(q: str, docs: Sequence[str], model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": q, "documents": list(docs), "top_n": len(docs)}
    body["return_documents"] = False
    return body | ({"model": model} if model else {})


DIALECTS: dict[str, Dialect] = {
    "tei": Dialect(
        "/rerank",
        lambda q, docs, m: {"query": q, "texts": list(docs), "raw_scores": True},
        lambda b: _results(b, "", "score"),
        scale="logit",
    ),
    "cohere-v1": Dialect(
        "/v1/rerank", _cohere_body, lambda b: _results(b, "results", "relevance_score")
    ),
    "jina": Dialect(
        "/v1/rerank", _cohere_body, lambda b: _results(b, "results", "relevance_score")
    ),
    "cohere-v2": Dialect(
        "/v2/rerank",
        lambda q, docs, m: {
            "model": m or "rerank",
            "query": q,
            "documents": list(docs),
            "top_n": len(docs),
        },
        lambda b: _results(b, "results", "relevance_score"),
    ),
    "vllm-score": Dialect(
        "/score",
        lambda q, docs, m: {"text_1": q, "text_2": list(docs)} | ({"model": m} if m else {}),
        lambda b: _results(b, "data", "score"),
    ),
    "vllm-rerank": Dialect(
        "/rerank",
        lambda q, docs, m: (
            {"query": q, "documents": list(docs), "top_n": len(docs)} | ({"model": m} if m else {})
        ),
        lambda b: _results(b, "results", "relevance_score"),
    ),
    "llamacpp": Dialect(
        "/v1/rerank",
        lambda q, docs, m: (
            {"query": q, "documents": list(docs), "top_n": len(docs)} | ({"model": m} if m else {})
        ),
        lambda b: _results(b, "results", "relevance_score"),
    ),
}


def endpoint(url: str, api: str) -> str:
    """``url`` when it has a path, else ``url`` + the dialect's default path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServiceError(f"{url}: not an http(s) URL")
    return url if parts.path not in ("", "/") else url.rstrip("/") + DIALECTS[api].path


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ServiceScorer:
    """A running reranking service spoken to in one dialect (thread-safe: one ``httpx``
    client shared by the worker threads)."""

    remote = True

    def __init__(
        self,
        name: str,
        url: str,
        api: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        batch_size: int = 32,
        scale: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        concurrency: int = 4,
    ) -> None:
        import httpx

        self.name, self.api, self.model = name, api, model
        self.url = endpoint(url, api)
        self.dialect = DIALECTS[api]
        self.scale = scale or self.dialect.scale
        self.batch_size = batch_size
        self.retries = retries
        self.requests = 0
        self.retried = 0
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max(concurrency, 16))
        self._client = httpx.Client(timeout=timeout, headers=headers, limits=limits)

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """One request (with retries) for these documents; scores in their order."""
        body = self.dialect.body(query, documents, self.model)
        answer = self._post(body)
        try:
            pairs = self.dialect.parse(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(
                f"{self.url}: the answer is not {self.api}'s shape ({type(exc).__name__}: "
                f"{exc}); check api:"
            ) from None
        scores: list[float | None] = [None] * len(documents)
        for index, value in pairs:
            if 0 <= index < len(scores):
                scores[index] = value
        if any(s is None for s in scores):
            missing = sum(s is None for s in scores)
            raise ServiceFailure(f"{self.url}: {missing} of {len(documents)} documents unscored")
        return [float(s) for s in scores]  # type: ignore[arg-type]

    def _post(self, body: dict[str, Any]) -> Any:
        import httpx

        delay = 0.5
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            self.requests += 1
            try:
                response = self._client.post(self.url, json=body)
            except httpx.ConnectError as exc:
                if last:
                    raise ServiceError(
                        f"{self.url}: cannot connect ({exc}); check the URL and that the "
                        "service is running"
                    ) from None
                wait = delay
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if last:
                    raise ServiceFailure(f"{self.url}: {type(exc).__name__}: {exc}") from None
                wait = delay
            else:
                status = response.status_code
                if status < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise ServiceError(f"{self.url}: the answer is not JSON") from None
                text = response.text[:300].strip()
                if status in RETRY_STATUSES and not last:
                    wait = _retry_after(response) or delay
                elif status in CONFIG_STATUSES:
                    raise ServiceError(f"{self.url}: HTTP {status}: {text}")
                else:  # this input refused (400, 413, 422...) or a server fault
                    raise ServiceFailure(f"{self.url}: HTTP {status}: {text}")
            self.retried += 1
            logger.info("%s: retrying in %.1f s (attempt %d)", self.url, wait, attempt + 1)
            time.sleep(min(wait, MAX_BACKOFF_S))
            delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def describe(self) -> dict[str, object]:
        return {
            "kind": "service",
            "url": self.url,
            "api": self.api,
            "model": self.model,
            "batch": self.batch_size,
            "requests": self.requests,
            "retried": self.retried,
        }

    def close(self) -> None:
        self._client.close()
