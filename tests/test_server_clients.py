"""Real clients against a real ``crossrank serve``: the official Cohere SDK (v1 with
``rank_fields`` and object documents, v2) and langchain-community's ``JinaRerank``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from crossrank.reranker import Reranker, sigmoid  # noqa: E402
from server_helpers import serving  # noqa: E402

KEY = "client-key"
QUERY = "what is panda"
DOCS = [
    "the giant panda is a bear",
    "debian is a free operating system for your computer",
    "pandas eat bamboo and live in the mountains",
]


@pytest.fixture(scope="module")
def server(bert_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("clients") / "serve.log"
    with serving(bert_dir, log, "--max-length", "64", env={"CROSSRANK_API_KEY": KEY}) as srv:
        yield srv, Reranker(bert_dir, device="cpu", max_length=64)


def want(rr: Reranker, texts: list[str]) -> np.ndarray:
    return sigmoid(np.asarray(rr.compute_score([[QUERY, t] for t in texts]), dtype=np.float32))


def test_cohere_sdk_v1_rank_fields_and_v2(server):
    cohere = pytest.importorskip("cohere")
    srv, rr = server
    docs = [
        {"title": "giant panda", "body": DOCS[0], "id": "a"},
        {"title": "debian", "body": DOCS[1], "id": "b"},
        {"body": DOCS[2], "id": "c"},
    ]
    co = cohere.Client(api_key=KEY, base_url=srv.base)
    r = co.rerank(
        model="m",
        query=QUERY,
        documents=docs,
        rank_fields=["title", "body"],
        return_documents=True,
    )
    texts = [f"title: giant panda\nbody: {DOCS[0]}", f"title: debian\nbody: {DOCS[1]}"]
    texts.append(f"body: {DOCS[2]}")
    scores = want(rr, texts)
    assert [x.index for x in r.results] == list(np.argsort(-scores, kind="stable"))
    for x in r.results:
        assert x.relevance_score == pytest.approx(float(scores[x.index]), abs=1e-5)
        # the whole object comes back (the SDK keeps the fields it does not know)
        assert x.document.model_dump(exclude_unset=True) == docs[x.index]
    co2 = cohere.ClientV2(api_key=KEY, base_url=srv.base)
    r2 = co2.rerank(model="m", query=QUERY, documents=DOCS, top_n=2)
    scores = want(rr, DOCS)
    assert [x.index for x in r2.results] == list(np.argsort(-scores, kind="stable"))[:2]
    with pytest.raises(cohere.core.ApiError) as info:  # an empty query: 400, Cohere's shape
        co2.rerank(model="m", query="", documents=DOCS)
    assert info.value.status_code == 400 and "query" in info.value.body["message"]
    with pytest.raises(cohere.core.ApiError) as info:
        cohere.Client(api_key="wrong", base_url=srv.base).rerank(query=QUERY, documents=DOCS)
    assert info.value.status_code == 401


def test_langchain_jina_rerank(server, monkeypatch):
    jina = pytest.importorskip("langchain_community.document_compressors.jina_rerank")
    from langchain_core.documents import Document

    srv, rr = server
    monkeypatch.setattr(jina, "JINA_API_URL", f"{srv.base}/v1/rerank")
    reranker = jina.JinaRerank(jina_api_key=KEY, top_n=2)
    out = reranker.compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    scores = want(rr, DOCS)
    best = list(np.argsort(-scores, kind="stable"))[:2]
    assert [d.page_content for d in out] == [DOCS[i] for i in best]
    for d, i in zip(out, best):
        assert d.metadata["relevance_score"] == pytest.approx(float(scores[i]), abs=1e-5)
    # an error reaches the user as Jina's "detail", not a KeyError
    with pytest.raises(RuntimeError, match="query"):
        reranker.rerank(DOCS, "")
