"""vLLM's score and rerank APIs: ``POST /score``, ``/v1/score`` and vLLM's body on ``/rerank``,
with the request shapes of vLLM's documentation, through an in-process client."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")

from starlette.testclient import TestClient  # noqa: E402

from crossrank.reranker import Reranker  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.settings import ServerSettings  # noqa: E402
from server_helpers import DOCS, QUERY, assert_error_shape, ready_client  # noqa: E402

TOL = 1e-6
#: vLLM's documentation examples
CAPITAL = "What is the capital of France?"
CAPITALS = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]


@pytest.fixture(scope="module")
def rr(bert_dir) -> Reranker:
    return Reranker(bert_dir, device="cpu", max_length=64)


@pytest.fixture(scope="module")
def client(rr):
    yield from ready_client(rr, max_wait_ms=1, max_client_batch_size=8)


def library(rr: Reranker, pairs: list[tuple[str, str]], **kw) -> np.ndarray:
    return np.asarray(rr.compute_score([list(p) for p in pairs], normalize=True, **kw))


def scores_of(body: dict) -> list[float]:
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return [d["score"] for d in body["data"]]


def tokens_of(rr: Reranker, pairs: list[tuple[str, str]]) -> int:
    return sum(len(p) for p in rr.tokenizer.encode(list(pairs)))


# -- /score ------------------------------------------------------------------------------


def test_score_one_to_n(client, rr):
    body = {"model": "BAAI/bge-reranker-v2-m3", "text_1": CAPITAL, "text_2": CAPITALS}
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"id", "object", "created", "model", "data", "usage"}
    assert out["object"] == "list" and out["id"].startswith("score-")
    assert isinstance(out["created"], int) and out["model"] == rr.model_name
    assert all(d["object"] == "score" for d in out["data"])
    pairs = [(CAPITAL, t) for t in CAPITALS]
    np.testing.assert_allclose(scores_of(out), library(rr, pairs), atol=TOL, rtol=0)
    n = tokens_of(rr, pairs)
    assert out["usage"] == {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0}
    # a list of one text_1 is broadcast as well (vLLM's 1:N)
    one = client.post("/score", json={"text_1": [CAPITAL], "text_2": CAPITALS}).json()
    np.testing.assert_allclose(scores_of(one), scores_of(out), atol=TOL, rtol=0)


def test_score_n_to_n_pairs(client, rr):
    text_1 = [QUERY, CAPITAL, QUERY, "hello"]
    text_2 = [DOCS[0], CAPITALS[1], DOCS[2], DOCS[3]]
    r = client.post("/score", json={"model": "m", "text_1": text_1, "text_2": text_2})
    assert r.status_code == 200, r.text
    pairs = list(zip(text_1, text_2))
    np.testing.assert_allclose(scores_of(r.json()), library(rr, pairs), atol=TOL, rtol=0)
    assert r.json()["usage"]["prompt_tokens"] == tokens_of(rr, pairs)


def test_score_single_strings(client, rr):
    r = client.post("/score", json={"text_1": CAPITAL, "text_2": CAPITALS[1]})
    assert r.status_code == 200, r.text
    (score,) = scores_of(r.json())
    assert score == pytest.approx(float(library(rr, [(CAPITAL, CAPITALS[1])])[0]), abs=TOL)
    assert 0 < score < 1


def test_v1_score_is_score(client):
    body = {"text_1": [QUERY, CAPITAL], "text_2": [DOCS[0], CAPITALS[0]]}
    a, b = client.post("/score", json=body).json(), client.post("/v1/score", json=body).json()
    assert scores_of(a) == pytest.approx(scores_of(b), abs=TOL)
    assert a["usage"] == b["usage"] and set(a) == set(b)


def test_score_options(client, rr):
    pairs = [(QUERY, d) for d in DOCS]
    body = {"text_1": QUERY, "text_2": DOCS, "use_activation": False}
    raw = scores_of(client.post("/score", json=body).json())
    want = rr.compute_score([list(p) for p in pairs])
    np.testing.assert_allclose(raw, want, atol=1e-5, rtol=0)
    long_doc = " ".join(["debian"] * 80)
    body = {"text_1": QUERY, "text_2": [long_doc, "hello"], "truncate_prompt_tokens": 16}
    cut = client.post("/score", json=body).json()
    pairs = [(QUERY, long_doc), (QUERY, "hello")]
    np.testing.assert_allclose(scores_of(cut), library(rr, pairs, max_length=16), atol=TOL)
    assert cut["usage"]["total_tokens"] <= 2 * 16
    # -1 (and any value over the model's length) is the model's length
    for tokens in (-1, 4096):
        body["truncate_prompt_tokens"] = tokens
        full = client.post("/score", json=body).json()
        np.testing.assert_allclose(scores_of(full), library(rr, pairs), atol=TOL)


@pytest.mark.parametrize(
    "body",
    [
        {"text_1": [QUERY, CAPITAL], "text_2": DOCS},
        {"text_1": [QUERY, CAPITAL, QUERY], "text_2": DOCS[:2]},
        {"text_1": [QUERY, CAPITAL], "text_2": DOCS[0]},
    ],
)
@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_score_mismatched_lengths_400(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert_error_shape(path, r.json())
    error = r.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert "same length" in error["message"]


@pytest.mark.parametrize(
    "body,status",
    [
        ({"text_1": QUERY}, 422),
        ({"text_1": [], "text_2": DOCS}, 422),
        ({"text_1": QUERY, "text_2": ["a"] * 9}, 422),  # over --max-client-batch-size
        ({"text_1": [QUERY] * 9, "text_2": ["a"] * 9}, 422),
        ({"text_1": QUERY, "text_2": [{"type": "image_url"}]}, 422),  # multimodal: no
        ({"text_1": QUERY, "text_2": DOCS, "truncate_prompt_tokens": -2}, 422),
        ({"text_1": QUERY, "text_2": DOCS, "truncate_prompt_tokens": 2}, 422),  # no room
    ],
)
def test_score_errors_in_vllm_shape(client, body, status):
    r = client.post("/score", json=body)
    assert r.status_code == status, r.text
    assert_error_shape("/score", r.json())
    assert r.json()["error"]["code"] == status


def test_score_405_and_503_shapes(rr):
    app = create_app(rr, ServerSettings(warmup=False))
    with TestClient(app) as c:
        r = c.get("/score")
        assert r.status_code == 405 and r.json()["error"]["type"] == "MethodNotAllowedError"
    # not started: 503 in vLLM's shape
    import asyncio

    import httpx

    async def go():
        transport = httpx.ASGITransport(app=create_app(rr, ServerSettings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/score", json={"text_1": QUERY, "text_2": DOCS})

    r = asyncio.run(go())
    assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"


# -- /rerank: vLLM's body beside TEI's -----------------------------------------------------


def test_rerank_vllm_body(client, rr):
    body = {"model": "BAAI/bge-reranker-base", "query": CAPITAL, "documents": DOCS + CAPITALS}
    r = client.post("/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"id", "model", "usage", "results"}
    assert out["id"].startswith("rerank-") and out["model"] == rr.model_name
    docs = DOCS + CAPITALS
    want = library(rr, [(CAPITAL, d) for d in docs])
    assert [x["index"] for x in out["results"]] == list(np.argsort(-want, kind="stable"))
    for x in out["results"]:
        assert set(x) == {"index", "document", "relevance_score"}
        assert x["document"] == {"text": docs[x["index"]]}
        assert x["relevance_score"] == pytest.approx(float(want[x["index"]]), abs=TOL)
    n = tokens_of(rr, [(CAPITAL, d) for d in docs])
    assert out["usage"] == {"prompt_tokens": n, "total_tokens": n}
    # top_n limits; 0 (vLLM's default) returns all
    top = client.post("/rerank", json={**body, "top_n": 2}).json()["results"]
    assert top == out["results"][:2]
    assert len(client.post("/rerank", json={**body, "top_n": 0}).json()["results"]) == len(docs)
    # one document as a string
    one = client.post("/rerank", json={"query": CAPITAL, "documents": CAPITALS[1]}).json()
    assert one["results"][0]["document"] == {"text": CAPITALS[1]}


def test_rerank_tei_body_unchanged(client, rr):
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200
    assert isinstance(r.json(), list) and set(r.json()[0]) == {"index", "score", "text"}
    # a body with both texts and documents is TEI's
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS[:2], "documents": DOCS})
    assert r.status_code == 200 and len(r.json()) == 2
    # TEI's errors stay TEI's, vLLM bodies get vLLM's
    for body in ({"query": "", "texts": DOCS}, {"query": QUERY, "texts": []}, {"query": QUERY}):
        r = client.post("/rerank", json=body)
        assert r.status_code in (400, 422)
        assert_error_shape("/rerank", r.json())
    r = client.post("/rerank", json={"query": QUERY, "documents": [1]})
    assert r.status_code == 422
    assert_error_shape("vllm", r.json())
    r = client.post("/rerank", json={"query": "", "documents": DOCS})
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
    r = client.post("/rerank", content=b"{bad json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert_error_shape("/rerank", r.json())


# -- OpenAPI -----------------------------------------------------------------------------


def test_openapi_lists_score_and_rerank_bodies(client):
    spec = client.get("/openapi.json").json()
    for path in ("/score", "/v1/score"):
        op = spec["paths"][path]["post"]
        assert {"400", "413", "422", "429", "503"} <= set(op["responses"])
    schemas = spec["components"]["schemas"]
    score = schemas["ScoreRequest"]["properties"]
    assert score["text_2"]["anyOf"][1]["maxItems"] == 8
    rerank = spec["paths"]["/rerank"]["post"]
    bodies = rerank["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [b["$ref"].rsplit("/", 1)[1] for b in bodies] == [
        "TEIRerankRequest",
        "VLLMRerankRequest",
    ]
    assert schemas["VLLMRerankRequest"]["not"] == {"required": ["texts"]}
    ok = rerank["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert len(ok) == 2
    errors = rerank["responses"]["422"]["content"]["application/json"]["schema"]["anyOf"]
    assert len(errors) == 2
