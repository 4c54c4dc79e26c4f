"""Errors: every status from the one table, in the shape of each route's API; internal faults
are 500s with a request id, never the client's fault."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")

from starlette.testclient import TestClient  # noqa: E402

from crossrank.reranker import Reranker  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.settings import ServerSettings  # noqa: E402
from server_helpers import DOCS, QUERY, assert_error_shape, wait_ready  # noqa: E402


@pytest.fixture(scope="module")
def rr(bert_dir) -> Reranker:
    return Reranker(bert_dir, device="cpu", max_length=64)


@pytest.fixture(scope="module")
def client(rr):
    app = create_app(rr, ServerSettings(max_wait_ms=1, chunk_overlap=8))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body",
    [
        ("/rerank", {"query": "", "texts": DOCS}),
        ("/rerank", {"query": QUERY, "texts": []}),
        ("/v1/rerank", {"query": "", "documents": DOCS}),
        ("/v1/rerank", {"query": QUERY, "documents": []}),
        ("/v2/rerank", {"query": QUERY, "documents": []}),
    ],
)
def test_400_empty(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 400
    assert_error_shape(path, r.json())
    if path == "/rerank":
        assert r.json()["error_type"] == "Empty" and r.json()["error"]


BAD_BODIES = [
    b"{bad json",
    b"null",
    b"[]",
    b'"text"',
    b'{"query": 1, "texts": ["a"]}',
    b'{"query": "q", "texts": "abc"}',
    b'{"query": "q", "texts": [null]}',
    b'{"query": "q", "texts": [{"text": 1}]}',
    b'{"query": "q", "documents": [{"id": 1}]}',
    b'{"query": "q", "documents": ["a"], "top_n": 0}',
    b'{"query": "q", "documents": ["a"], "top_n": 100000000000000000000000}',
    b'{"query": "q", "documents": ["a"], "max_chunks_per_doc": -1}',
    b'{"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}',
    b'{"query": "q", "texts": ["a"], "truncation_direction": "up"}',
    b'{"query": "\\ud800", "texts": ["a\\udfff"], "documents": ["\\ud800"]}',
    b'{"query": "q", "texts": ["\\u0000"], "documents": ["\\u0000"]}',
    b"\xff\xfe\x00",
    b'{"query": ' * 1000,
]


@pytest.mark.parametrize("body", BAD_BODIES)
@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_bad_bodies_are_4xx(client, path, body):
    from crossrank.server.apis.vllm import is_vllm_rerank

    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code == 200, (r.status_code, r.text)
    if r.status_code != 200:  # on /rerank, a body with documents and no texts is vLLM's
        vllm = path == "/rerank" and is_vllm_rerank(body)
        assert_error_shape("vllm" if vllm else path, r.json())


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": True}),
        ("/v2/rerank", {"query": QUERY, "documents": ["a"], "top_n": "1"}),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "max_chunks_per_doc": 1.5}),
        ("/rerank", {"query": QUERY, "texts": ["a"], "raw_scores": "yes"}),
        ("/rerank", {"query": QUERY, "texts": ["a"], "truncate": 0}),
        ("/rerank", {"query": "\ud800", "texts": ["a"]}),
        ("/v1/rerank", {"query": QUERY, "documents": [{"text": "a", "x": "\udfff"}]}),
    ],
)
def test_strict_types_422(client, path, body):
    """What the OpenAPI schema refuses, the server refuses: no coercion of bools or strings."""
    import json

    raw = json.dumps(body)  # lone surrogates become \\u escapes
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert_error_shape(path, r.json())


def test_422_over_limits_and_413(rr):
    settings = ServerSettings(
        max_client_batch_size=3, max_input_chars=40, payload_limit=600, max_wait_ms=1
    )
    with TestClient(create_app(rr, settings)) as c:
        wait_ready(c)
        r = c.post("/rerank", json={"query": QUERY, "texts": ["a"] * 4})
        assert r.status_code == 422 and "at most 3" in r.json()["error"]
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": ["a" * 41]})
        assert r.status_code == 422 and "40 characters" in r.json()["message"]
        r = c.post("/v2/rerank", json={"query": "q" * 41, "documents": ["a"]})
        assert r.status_code == 422
        big = {"query": QUERY, "texts": ["word " * 8] * 3 + ["x" * 500]}
        r = c.post("/rerank", json=big)
        assert r.status_code == 413 and r.json()["error_type"] == "PayloadTooLarge"
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": ["y" * 700]})
        assert r.status_code == 413 and set(r.json()) == {"message", "detail"}

        def chunked():  # no Content-Length: the limit is enforced while reading
            for _ in range(10):
                yield b" " * 100

        r = c.post("/rerank", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        # a chunked body under the limit still works
        r = c.post(
            "/rerank",
            content=iter([b'{"query": "q", ', b'"texts": ["a", "b"]}']),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200 and len(r.json()) == 2


def test_401_api_key(rr):
    app = create_app(rr, ServerSettings(api_key="s3cret", max_wait_ms=1))
    with TestClient(app) as c:
        assert c.get("/health").status_code in (200, 503)  # open
        wait_ready(c)
        body = {"query": QUERY, "texts": DOCS}
        assert c.post("/rerank", json=body).status_code == 401
        r = c.post("/rerank", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error_type"] == "Unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.post("/rerank", json=body, headers={"Authorization": "Basic s3cret"})
        assert r.status_code == 401
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 401 and set(r.json()) == {"message", "detail"}
        assert c.get("/metrics").status_code == 401
        assert c.get("/info").status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/rerank", json=body, headers=ok).status_code == 200
        assert c.get("/info", headers=ok).json()["auth"] is True
        assert c.get("/openapi.json").status_code == 200


def test_503_before_startup(rr):
    import httpx

    app = create_app(rr, ServerSettings())

    async def go():  # ASGITransport runs no lifespan: the model never gets ready
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            health = await c.get("/health")
            tei = await c.post("/rerank", json={"query": QUERY, "texts": DOCS})
            v1 = await c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        return health, tei, v1

    health, tei, v1 = asyncio.run(go())
    assert health.status_code == 503 and health.json() == {"status": "loading"}
    assert tei.status_code == 503 and tei.json()["error_type"] == "Unhealthy"
    assert v1.status_code == 503 and set(v1.json()) == {"message", "detail"}


def test_load_failure_reports_503(tmp_path):
    app = create_app(ServerSettings(model=str(tmp_path / "missing"), warmup=False))
    with TestClient(app) as c:
        for _ in range(200):
            if c.get("/health").json()["status"] != "loading":
                break
            time.sleep(0.01)
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "failed"}


def test_404_405_shapes(client):
    assert client.get("/nope").status_code == 404
    r = client.get("/v1/rerank")
    assert r.status_code == 405 and set(r.json()) == {"message", "detail"}
    r = client.get("/rerank")
    assert r.status_code == 405 and r.json()["error_type"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    "path,shape",
    [
        ("/v2/nothing", "/v2/rerank"),
        ("/v1/nothing", "/v1/rerank"),
        ("/v1/score/nothing", "/v1/rerank"),
        ("/nothing", "/rerank"),
    ],
)
def test_unknown_route_takes_its_prefix_shape(client, path, shape):
    r = client.post(path, json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 404
    assert_error_shape(shape, r.json())


def test_exact_paths_come_before_prefixes(client):
    r = client.get("/v1/score")  # vLLM's route, under /v1/: still vLLM's shape
    assert r.status_code == 405
    assert_error_shape("vllm", r.json())


# -- internal faults are 500s with a request id, never the client's fault ----------------


class BrokenTokenizer:
    """A pair tokenizer with a bug (as the LLM tokenizer once lacked ``limits``)."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        raise AttributeError(f"'BrokenTokenizer' object has no attribute {name!r}")


def test_internal_error_is_500_with_request_id(bert_dir, caplog):
    rr = Reranker(bert_dir, device="cpu", max_length=64)
    app = create_app(rr, ServerSettings(max_wait_ms=1, warmup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        # the scheduler tokenizes with its reranker's tokenizer: give it a broken one
        sched = app.state.crossrank.scheduler
        sched.reranker = SimpleNamespace(tokenizer=BrokenTokenizer(rr.tokenizer))
        with caplog.at_level(logging.ERROR, logger="crossrank.server"):
            tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS})
            v1 = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert c.get("/metrics").status_code == 200  # the service lives on
    assert tei.status_code == 500 and tei.json()["error_type"] == "Internal"
    rid = tei.headers["x-request-id"]
    assert rid in tei.json()["error"] and "AttributeError" not in tei.json()["error"]
    assert v1.status_code == 500 and set(v1.json()) == {"message", "detail"}
    assert v1.headers["x-request-id"] in v1.json()["message"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and rid in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback, under the request id
    assert "AttributeError" in caplog.text
