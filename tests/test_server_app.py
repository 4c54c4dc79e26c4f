"""The HTTP routes through an in-process client (starlette's TestClient runs the lifespan).

The route tests run against an encoder (BERT) and an LLM family (Gemma)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from crossrank.engine.tokenize import EncodedPair  # noqa: E402
from crossrank.reranker import Reranker, sigmoid  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.settings import ServerSettings  # noqa: E402
from server_helpers import DOCS, QUERY, wait_ready  # noqa: E402

TOL = 1e-5
#: words the tiny WordPiece tokenizer keeps as one token each (so word windows = token windows)
FILLER = [
    "debian",
    "free",
    "for",
    "your",
    "search",
    "rank",
    "cross",
    "top",
    "hundred",
    "candidates",
    "query",
    "by",
    "their",
]


#: the model families the route tests run against
FAMILIES = ["bert_dir", "gemma_dir"]


@pytest.fixture(scope="module")
def rr(bert_dir) -> Reranker:
    return Reranker(bert_dir, device="cpu", max_length=64)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> tuple[Reranker, TestClient]:
    """A reranker of each family and a client of its app."""
    rr = Reranker(request.getfixturevalue(request.param), device="cpu", max_length=64)
    with TestClient(create_app(rr, ServerSettings(max_wait_ms=1, chunk_overlap=8))) as c:
        wait_ready(c)
        yield rr, c


@pytest.fixture(scope="module")
def client(rr):
    app = create_app(rr, ServerSettings(max_wait_ms=1, chunk_overlap=8))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def expected(rr: Reranker, docs: list[str], query: str = QUERY) -> np.ndarray:
    return np.asarray(rr.compute_score([[query, d] for d in docs]), dtype=np.float32)


# -- response shapes and scores ----------------------------------------------------------


@pytest.mark.parametrize("model", ["bert_dir", "xlmr_dir", "gemma_dir"])
def test_tei_scores_equal_compute_score(model, request):
    rr = Reranker(request.getfixturevalue(model), device="cpu")
    with TestClient(create_app(rr, ServerSettings(max_wait_ms=1))) as c:
        wait_ready(c)
        raw = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})
        default = c.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert raw.status_code == 200 and default.status_code == 200
    want = expected(rr, DOCS)
    got = {r["index"]: r["score"] for r in raw.json()}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], want, atol=TOL, rtol=0)
    got = {r["index"]: r["score"] for r in default.json()}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], sigmoid(want), atol=TOL)
    # best first, every index once, no text unless asked
    assert [r["index"] for r in raw.json()] == list(np.argsort(-want, kind="stable"))
    assert all(set(r) == {"index", "score"} for r in raw.json())


def test_tei_return_text(family):
    _, client = family
    body = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    assert all(r["text"] == DOCS[r["index"]] for r in body)
    scores = [r["score"] for r in body]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)


def test_v1_cohere_jina_shape(family):
    rr, client = family
    docs = [DOCS[0], {"text": DOCS[1], "id": "x"}, *DOCS[2:]]
    r = client.post("/v1/rerank", json={"model": "anything", "query": QUERY, "documents": docs})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "model", "results", "usage", "meta"}
    assert body["meta"]["api_version"]["version"] == "1"
    want = sigmoid(expected(rr, DOCS))
    assert [x["index"] for x in body["results"]] == list(np.argsort(-want, kind="stable"))
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(float(want[x["index"]]), abs=TOL)
        assert x["document"] == (
            {"text": DOCS[1], "id": "x"} if x["index"] == 1 else {"text": DOCS[x["index"]]}
        )
    pairs = rr.tokenizer.encode([(QUERY, d) for d in DOCS])
    assert body["usage"]["total_tokens"] == sum(len(p) for p in pairs)

    top = client.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": False},
    ).json()["results"]
    assert [x["index"] for x in top] == [x["index"] for x in body["results"][:2]]
    assert all("document" not in x for x in top)
    # top_n beyond the number of documents returns them all
    many = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 99}).json()
    assert len(many["results"]) == len(DOCS)


def test_v2_cohere_shape(family):
    rr, client = family
    r = client.post(
        "/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 3}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "results", "meta"}
    assert body["meta"]["api_version"]["version"] == "2"
    want = sigmoid(expected(rr, DOCS))
    assert [x["index"] for x in body["results"]] == list(np.argsort(-want, kind="stable"))[:3]
    for x in body["results"]:
        assert set(x) == {"index", "relevance_score"}
        assert x["relevance_score"] == pytest.approx(float(want[x["index"]]), abs=TOL)


# -- long documents ----------------------------------------------------------------------
# The oracle works on token ids (the tiny tokenizer is retrained, not identically, per
# session): windows are sliced by hand, pairs assembled with BERT's template, and scored by
# the library's engine.


def ids_of(rr: Reranker, text: str) -> list[int]:
    return rr.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids


def bert_pair(rr: Reranker, q: list[int], p: list[int]) -> EncodedPair:
    """``[CLS] q [SEP] p [SEP]`` with type ids 0 / 1."""
    tok = rr.tokenizer.tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    return EncodedPair([cls, *q, sep, *p, sep], [0] * (len(q) + 2) + [1] * (len(p) + 1))


def window_scores(rr: Reranker, doc: str, overlap: int, limit: int | None = None) -> np.ndarray:
    """Scores of the overlapping windows of ``doc`` (its first ``limit`` tokens)."""
    q, p = ids_of(rr, QUERY), ids_of(rr, doc)[:limit]
    size = 64 - 3 - len(q)  # max_length - special tokens - query
    starts = [0]
    while starts[-1] + size < len(p):
        starts.append(starts[-1] + size - overlap)
    return rr.engine.score_encoded([bert_pair(rr, q, p[s : s + size]) for s in starts])


def long_doc(tail: str, filler: str = "debian") -> str:
    return " ".join([*([filler] * 110), tail])


def test_oracle_pair_is_the_library_pair(rr):
    doc = long_doc("the giant panda")
    q, p = ids_of(rr, QUERY), ids_of(rr, doc)
    (ref,) = rr.tokenizer.encode([(QUERY, doc)])
    mine = bert_pair(rr, q, p[: 64 - 3 - len(q)])
    assert mine.ids == ref.ids and mine.type_ids == ref.type_ids


def test_truncation_left_and_right(client, rr):
    doc = long_doc("the giant panda is a bear")
    right = client.post("/rerank", json={"query": QUERY, "texts": [doc], "raw_scores": True})
    assert right.json()[0]["score"] == pytest.approx(float(expected(rr, [doc])[0]), abs=TOL)
    left = client.post(
        "/rerank",
        json={"query": QUERY, "texts": [doc], "raw_scores": True, "truncation_direction": "Left"},
    )
    q, p = ids_of(rr, QUERY), ids_of(rr, doc)
    want = rr.engine.score_encoded([bert_pair(rr, q, p[-(64 - 3 - len(q)) :])])[0]
    assert left.json()[0]["score"] == pytest.approx(float(want), abs=TOL)
    refused = client.post("/rerank", json={"query": QUERY, "texts": [doc], "truncate": False})
    assert refused.status_code == 422
    assert refused.json()["error_type"] == "Validation"
    ok = client.post("/rerank", json={"query": QUERY, "texts": ["short"], "truncate": False})
    assert ok.status_code == 200


def test_chunking_scores_best_chunk(client, rr):
    # a filler that scores low, and a tail that makes the last chunk the best (the tiny model
    # is random, so both are searched for; the equalities below hold for any document)
    fills = expected(rr, [" ".join([w] * 50) for w in FILLER])
    filler = FILLER[int(fills.argmin())]
    rng = np.random.default_rng(0)
    words = ["the", "giant", "panda", "is", "a", "bear", "what", "pandas", "eat", "china"]
    tails = [" ".join(rng.choice(words, size=12)) for _ in range(40)]
    best_last = [t for t in tails if window_scores(rr, long_doc(t, filler), 8).argmax() >= 2]
    assert best_last, "no tail made the last chunk the best one"
    for tail in [best_last[0], tails[0]]:
        doc = long_doc(tail, filler)
        want = window_scores(rr, doc, overlap=8)
        assert len(want) >= 3
        r = client.post(
            "/v1/rerank",
            json={"query": QUERY, "documents": [doc, "hello"], "max_chunks_per_doc": 5},
        )
        got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        assert got[0] == pytest.approx(float(sigmoid(want.max())), abs=TOL)
        # one chunk: the truncated document, the library's score
        one = client.post(
            "/v1/rerank",
            json={"query": QUERY, "documents": [doc], "max_chunks_per_doc": 1},
        ).json()["results"][0]["relevance_score"]
        assert one == pytest.approx(float(sigmoid(expected(rr, [doc])[0])), abs=TOL)
        assert one == pytest.approx(float(sigmoid(want[0])), abs=TOL)
        if tail == best_last[0]:  # the relevant end of the document lifts its score
            assert got[0] > one
        # Cohere v2: read the first 60 tokens only, in two windows
        v2 = client.post(
            "/v2/rerank",
            json={"query": QUERY, "documents": [doc], "max_tokens_per_doc": 60},
        ).json()["results"][0]["relevance_score"]
        want2 = window_scores(rr, doc, overlap=8, limit=60)
        assert len(want2) == 2
        assert v2 == pytest.approx(float(sigmoid(want2.max())), abs=TOL)


# -- service routes ----------------------------------------------------------------------


def test_info_openapi_docs(client, bert_dir):
    info = client.get("/info").json()
    assert info["model_dir"] == str(bert_dir)
    assert info["max_length"] == 64 and info["dtype"] == "float32" and info["ready"] is True
    assert info["max_batch_tokens"] == 8192 and info["auth"] is False
    spec = client.get("/openapi.json").json()
    assert {"/rerank", "/v1/rerank", "/v2/rerank", "/health", "/info", "/metrics"} <= set(
        spec["paths"]
    )
    assert "422" in spec["paths"]["/rerank"]["post"]["responses"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_metrics_and_access_log(client, caplog):
    with caplog.at_level(logging.INFO, logger="crossrank.server.access"):
        client.post("/rerank", json={"query": QUERY, "texts": DOCS})
        client.post("/rerank", json={"query": "", "texts": DOCS})
    lines = [r.getMessage() for r in caplog.records if r.name == "crossrank.server.access"]
    import re

    ok = re.compile(r'"POST /rerank HTTP/1.1" 200 [0-9.]+ms \[[0-9a-f]{16}\]$')
    assert any(ok.search(line) for line in lines), lines
    assert any('"POST /rerank HTTP/1.1" 400' in line for line in lines)
    text = client.get("/metrics").text
    assert 'crossrank_requests_total{route="/rerank",status="200"}' in text
    assert 'crossrank_requests_total{route="/rerank",status="400"}' in text
    for name in (
        "crossrank_request_duration_seconds_bucket",
        "crossrank_queue_duration_seconds_count",
        "crossrank_inference_duration_seconds_count",
        "crossrank_batch_pairs_bucket",
        "crossrank_batch_tokens_bucket",
        "crossrank_queue_pairs 0.0",
    ):
        assert name in text, name


# -- Cohere v1 rank_fields and object documents ------------------------------------------


def test_v1_rank_fields_join_and_echo(family):
    """Objects are ranked by their rank_fields as "field: value" lines and echoed whole."""
    rr, client = family
    docs = [
        {"title": "giant panda", "body": DOCS[0], "id": 7},
        {"title": "debian", "body": DOCS[1], "text": "ignored with rank_fields", "year": 1993},
        {"body": DOCS[2]},  # no title: that field is skipped
        "a plain string",  # strings are ranked as they are
    ]
    r = client.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": docs, "rank_fields": ["title", "body"]},
    )
    assert r.status_code == 200, r.text
    ranked = [
        f"title: giant panda\nbody: {DOCS[0]}",
        f"title: debian\nbody: {DOCS[1]}",
        f"body: {DOCS[2]}",
        "a plain string",
    ]
    want = sigmoid(expected(rr, ranked))
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(np.argsort(-want, kind="stable"))
    for x in results:
        assert x["relevance_score"] == pytest.approx(float(want[x["index"]]), abs=TOL)
        doc = docs[x["index"]]
        assert x["document"] == ({"text": doc} if isinstance(doc, str) else doc)
    # without rank_fields: an object's text, or all its fields when it has none
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": [docs[1], {"a": 1}]})
    want = sigmoid(expected(rr, ["ignored with rank_fields", "a: 1"]))
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    np.testing.assert_allclose([got[0], got[1]], want, atol=TOL)
    # a text that is not a string is refused, in the Cohere / Jina error shape
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": [{"text": 3}]})
    assert r.status_code == 422 and set(r.json()) == {"message", "detail"}


def test_info_reports_the_settings(client):
    from crossrank.server.settings import info_settings

    info = client.get("/info").json()
    settings = client.app.state.crossrank.settings
    for name, value in info_settings(settings).items():
        if name != "max_batch_tokens":  # the value in use (the engine's unless set)
            assert info[name] == value, name
    assert info["max_batch_tokens"] == client.app.state.crossrank.scheduler.max_batch_tokens
    assert "api_key" not in info


def test_info_shows_the_auto_backend_choice(bert_dir, client):
    assert client.get("/info").json()["backend_choice"] is None  # an explicit backend
    rr = Reranker(bert_dir, device="cpu", max_length=64, backend="auto")
    with TestClient(create_app(rr, ServerSettings(warmup=False))) as c:
        wait_ready(c)
        info = c.get("/info").json()
    assert info["backend_choice"] == rr.backend_choice.as_dict()
    timings = info["backend_choice"]["timings"]
    assert timings[0]["candidate"] == "torch fp32" and timings[0]["pairs_per_s"] > 0


def test_head_health_answers_like_get(client, rr):
    r = client.head("/health")
    assert r.status_code == 200 and r.content == b""
    app = create_app(rr, ServerSettings())

    async def before_startup() -> httpx.Response:  # no lifespan: the model never gets ready
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.head("/health")

    r = asyncio.run(before_startup())
    assert r.status_code == 503 and r.content == b""
