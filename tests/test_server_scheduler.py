"""Cross-request batching, admission (429), bounded queue and cancellation of the scheduler."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
import torch  # noqa: E402

from crossrank.reranker import Reranker, sigmoid  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.chunking import ChunkSpec  # noqa: E402
from crossrank.server.metrics import Metrics  # noqa: E402
from crossrank.server.scheduler import Overloaded, Scheduler  # noqa: E402
from crossrank.server.settings import ServerSettings  # noqa: E402

QUERY = "what is panda"
WORDS = [
    "the",
    "giant",
    "panda",
    "is",
    "a",
    "bear",
    "debian",
    "free",
    "for",
    "your",
    "search",
    "rank",
    "cross",
    "top",
    "china",
]
TOL = 1e-5


@pytest.fixture(scope="module")
def rr(bert_dir) -> Reranker:
    return Reranker(bert_dir, device="cpu", max_length=64)


def docs_for(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 70)))) for _ in range(n)]


async def _ready(c: httpx.AsyncClient) -> None:
    for _ in range(500):
        if (await c.get("/health")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the app never became ready")


def run_app(app, scenario):
    """Run ``scenario(client, state)`` against ``app`` with its lifespan, in one event loop."""

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await _ready(c)
                return await scenario(c, app.state.crossrank)

    return asyncio.run(main())


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    raise KeyError(name)


def test_concurrent_requests_share_batches(rr):
    app = create_app(rr, ServerSettings(max_wait_ms=300, max_batch_tokens=512))
    requests = [(f"{QUERY} {i}", docs_for(i, 3 + i)) for i in range(8)]

    async def scenario(c, state):
        calls = [
            c.post("/rerank", json={"query": q, "texts": d, "raw_scores": True})
            for q, d in requests
        ]
        responses = await asyncio.gather(*calls)
        return responses, (await c.get("/metrics")).text, state.scheduler.queued

    responses, text, queued = run_app(app, scenario)
    for (q, docs), r in zip(requests, responses):
        assert r.status_code == 200
        got = {x["index"]: x["score"] for x in r.json()}
        want = rr.compute_score([[q, d] for d in docs])
        np.testing.assert_allclose([got[i] for i in range(len(docs))], want, atol=TOL, rtol=0)
    batches = metric(text, "crossrank_batch_requests_count")
    single = metric(text, "crossrank_batch_requests_bucket", {"le": "1.0"})
    assert batches > single, "no forward pass held pairs of more than one request"
    assert metric(text, "crossrank_pairs_total") >= sum(len(d) for _, d in requests)
    assert queued == 0 and metric(text, "crossrank_queue_pairs") == 0


def test_overload_429_then_recovery(rr):
    app = create_app(rr, ServerSettings(max_wait_ms=1, max_queued_pairs=10))
    big = docs_for(1, 400)

    async def scenario(c, state):
        first = asyncio.create_task(c.post("/v1/rerank", json={"query": QUERY, "documents": big}))
        for _ in range(10000):  # until the big request is admitted
            if state.scheduler.queued:
                break
            await asyncio.sleep(0)
        refused_v1 = await c.post("/v1/rerank", json={"query": QUERY, "documents": ["a"]})
        refused_tei = await c.post("/rerank", json={"query": QUERY, "texts": ["a"]})
        admitted = await first
        again = await c.post("/v1/rerank", json={"query": QUERY, "documents": ["a"]})
        text = (await c.get("/metrics")).text
        return refused_v1, refused_tei, admitted, again, text, state.scheduler.queued

    refused_v1, refused_tei, admitted, again, text, queued = run_app(app, scenario)
    assert refused_v1.status_code == 429 and set(refused_v1.json()) == {"message"}
    assert int(refused_v1.headers["retry-after"]) >= 1
    assert refused_tei.status_code == 429 and refused_tei.json()["error_type"] == "Overloaded"
    # admission is per request: the big one (400 pairs > the limit of 10) was served whole
    assert admitted.status_code == 200 and len(admitted.json()["results"]) == 400
    assert again.status_code == 200
    assert metric(text, "crossrank_rejected_requests_total") == 2
    assert metric(text, "crossrank_requests_total", {"route": "/v1/rerank", "status": "429"}) == 1
    assert queued == 0


def test_queue_stays_bounded_under_a_burst(rr):
    limit, per_request = 60, 40
    app = create_app(rr, ServerSettings(max_wait_ms=1, max_queued_pairs=limit))
    depth: list[int] = []

    async def scenario(c, state):
        done = False

        async def watch():
            while not done:
                depth.append(state.scheduler.queued)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        calls = [
            c.post("/rerank", json={"query": QUERY, "texts": docs_for(i, per_request)})
            for i in range(24)
        ]
        responses = await asyncio.gather(*calls)
        done = True
        await watcher
        return responses, state.scheduler.queued

    responses, queued = run_app(app, scenario)
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes
    assert max(depth) <= limit - 1 + per_request
    assert queued == 0


def test_scheduler_scores_equal_compute_score(rr):
    """Many requests of mixed lengths through small batches, with and without chunks."""
    sched = Scheduler(rr, Metrics(), max_batch_tokens=300, max_wait_ms=20)
    sched.start()
    jobs = [(f"query {i} panda", docs_for(10 + i, 5 + 2 * i)) for i in range(6)]

    async def main():
        plain = [sched.score(q, d, ChunkSpec()) for q, d in jobs]
        chunked = [sched.score(q, d, ChunkSpec(max_chunks=4, overlap=4)) for q, d in jobs]
        return await asyncio.gather(*plain), await asyncio.gather(*chunked)

    try:
        plain, chunked = asyncio.run(main())
    finally:
        sched.close()
    for (q, docs), (logits, tokens), (best, _) in zip(jobs, plain, chunked):
        want = rr.compute_score([[q, d] for d in docs])
        np.testing.assert_allclose(logits, want, atol=TOL, rtol=0)
        assert tokens == sum(len(p) for p in rr.tokenizer.encode([(q, d) for d in docs]))
        # a chunk never scores below... the first chunk, which is the truncated document
        assert np.all(best >= logits - TOL)
    assert sched.queued == 0


def test_cancelled_request_frees_the_queue(rr):
    sched = Scheduler(rr, Metrics(), max_wait_ms=500)
    sched.start()

    async def main():
        task = asyncio.create_task(sched.score(QUERY, docs_for(3, 50), ChunkSpec()))
        for _ in range(10000):
            if sched._pending:  # queued, waiting for its batch to fill
                break
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if sched.queued == 0:
                break
            await asyncio.sleep(0.01)
        return sched.queued

    try:
        assert asyncio.run(main()) == 0
    finally:
        sched.close()


def test_overloaded_carries_retry_after(rr):
    sched = Scheduler(rr, Metrics(), max_wait_ms=1000, max_queued_pairs=1)
    sched.start()

    async def main():
        task = asyncio.create_task(sched.score(QUERY, ["a", "b"], ChunkSpec()))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await sched.score(QUERY, ["c"], ChunkSpec())
        task.cancel()
        return info.value

    try:
        err = asyncio.run(main())
    finally:
        sched.close()
    assert 1 <= err.retry_after <= 60


class FailingBackend:
    """A backend whose device fails (a real failure mode, e.g. a lost GPU)."""

    name = "failing"
    device = torch.device("cpu")
    n_outputs = 1
    model = None

    def workers_for(self, n_pairs, n_batches):
        return 1

    def score(self, batch):
        raise RuntimeError("device lost")


def test_backend_failure_is_424_not_500(bert_dir):
    broken = Reranker(bert_dir, device="cpu")
    broken.engine.backend = FailingBackend()
    app = create_app(broken, ServerSettings(max_wait_ms=1, warmup=False))

    async def scenario(c, state):
        tei = await c.post("/rerank", json={"query": QUERY, "texts": ["a", "b"]})
        v1 = await c.post("/v1/rerank", json={"query": QUERY, "documents": ["a"]})
        return tei, v1, state.scheduler.queued

    tei, v1, queued = run_app(app, scenario)
    assert tei.status_code == 424 and tei.json()["error_type"] == "Backend"
    assert "device lost" in tei.json()["error"]
    assert v1.status_code == 424 and "device lost" in v1.json()["message"]
    assert queued == 0


def test_sigmoid_matches_the_library(rr):
    app = create_app(rr, ServerSettings(max_wait_ms=1))
    docs = docs_for(7, 4)

    async def scenario(c, state):
        return await c.post("/v2/rerank", json={"query": QUERY, "documents": docs})

    r = run_app(app, scenario)
    want = rr.compute_score([[QUERY, d] for d in docs], normalize=True)
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(docs))], want, atol=TOL)
    np.testing.assert_allclose(
        want, sigmoid(np.asarray(rr.compute_score([[QUERY, d] for d in docs])))
    )
