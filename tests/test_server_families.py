"""The server with every model family: chunked routes, truncate=false and query-prefix sharing
go through the engine's chunking (no encoder-only code path)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")

from starlette.testclient import TestClient  # noqa: E402

from crossrank.reranker import Reranker  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.settings import ServerSettings  # noqa: E402
from crossrank.testing import short_max_length  # noqa: E402

QUERY = "what do debian maintainers do?"
LONG = " ".join(f"sentence {i} about debian packages and their maintainers." for i in range(40))
DOCS = [LONG, "maintainers upload packages", "hi"]


def test_long_document_routes_for_every_family(family_dir, monkeypatch):
    from crossrank.engine import llm_backend

    rr = Reranker(
        family_dir, max_length=short_max_length(family_dir), device="cpu", show_progress=False
    )
    shared = []
    if "share_prefix" in rr.family.options:  # count batches that really share the prefix
        real = llm_backend.split_prefixes

        def spy(batch, min_fraction=0.0):
            out = real(batch, 0.0)
            shared.append(out is not None)
            return out

        monkeypatch.setattr(llm_backend, "split_prefixes", spy)
    want = rr.compute_score([(QUERY, d) for d in DOCS], max_chunks_per_doc=4)
    want_head = rr.compute_score([(QUERY, d) for d in DOCS], max_tokens_per_doc=12)
    shared.clear()
    app = create_app(rr, ServerSettings(max_wait_ms=1, warmup=False))
    with TestClient(app) as c:
        v1 = c.post(
            "/v1/rerank",
            json={"query": QUERY, "documents": DOCS, "max_chunks_per_doc": 4},
        )
        v2 = c.post(
            "/v2/rerank",
            json={"model": "m", "query": QUERY, "documents": DOCS, "max_tokens_per_doc": 12},
        )
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False})
        ok = c.post("/rerank", json={"query": QUERY, "texts": DOCS[1:], "truncate": False})
    assert v1.status_code == 200, v1.text
    got = {r["index"]: r["relevance_score"] for r in v1.json()["results"]}
    np.testing.assert_allclose([got[i] for i in range(3)], _sigmoid(want), atol=1e-5)
    assert v2.status_code == 200, v2.text
    got = {r["index"]: r["relevance_score"] for r in v2.json()["results"]}
    np.testing.assert_allclose([got[i] for i in range(3)], _sigmoid(want_head), atol=1e-5)
    # truncate=false: the long document is refused as the client's input, the short ones pass
    assert tei.status_code == 413 or tei.status_code == 422, tei.text
    assert "tokens" in tei.text
    assert ok.status_code == 200, ok.text
    if "share_prefix" in rr.family.options:
        assert any(shared), "the server's chunked batches never shared the query prefix"


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))
