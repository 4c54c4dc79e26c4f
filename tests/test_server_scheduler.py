"""Cross-request batching, admission (429), bounded queue and cancellation of the scheduler."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
import torch  # noqa: E402

from crossrank.engine.chunking import ChunkSpec  # noqa: E402
from crossrank.reranker import Reranker, sigmoid  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.errors import Overloaded  # noqa: E402
from crossrank.server.metrics import Metrics  # noqa: E402
from crossrank.server.scheduler import DRAIN_MARGIN, Scheduler, Stopped  # noqa: E402
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
    assert refused_v1.status_code == 429 and set(refused_v1.json()) == {"message", "detail"}
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
        chunked = [
            sched.score(q, d, ChunkSpec(max_chunks_per_doc=4, chunk_overlap=4)) for q, d in jobs
        ]
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
    assert v1.status_code == 424 and "device lost" in v1.json()["detail"]
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


def test_admission_by_expected_wait(rr):
    """With a measured drain rate, a request that would wait too long gets 429, and its
    Retry-After is the time until the queue has drained enough for it to fit."""
    # no pair bound: on a fast machine two seconds of work is more than the default 10,000 pairs
    sched = Scheduler(rr, Metrics(), max_wait_ms=2000, max_queue_wait=0.5, max_queued_pairs=10**9)
    sched.start()

    async def main():
        await sched.score(QUERY, docs_for(1, 40), ChunkSpec())  # measures the rate
        rate = sched.rate
        assert rate > 0
        # queue more than max_queue_wait seconds of work (its batch waits up to 2 s to fill)
        n = int(rate * 2) + 1
        big = asyncio.create_task(sched.score(QUERY, docs_for(2, n), ChunkSpec()))
        for _ in range(100000):
            if sched._pending:
                break
            await asyncio.sleep(0)
        queued = sched.queued
        with pytest.raises(Overloaded) as info:
            await sched.score(QUERY, ["a", "b"], ChunkSpec())
        want = max(1, math.ceil(queued / sched.rate - 0.5))
        big.cancel()
        return info.value, want

    try:
        err, want = asyncio.run(main())
    finally:
        sched.close()
    # a batch can finish (and move the rate) between the snapshot above and the refusal, so
    # allow one second either way; the exact formula is tested in test_server_admission.py
    assert abs(err.retry_after - want) <= 1, (err.retry_after, want)
    assert err.headers == {"Retry-After": str(err.retry_after)}
    assert "would wait" in err.message


def test_cancel_drops_queued_pairs_at_once(rr):
    """A cancelled request's pairs leave the count at once (admission sees the room) and are
    never scored."""
    m = Metrics()
    sched = Scheduler(rr, m, max_wait_ms=3000)
    sched.start()

    async def main():
        task = asyncio.create_task(sched.score(QUERY, docs_for(3, 30), ChunkSpec()))
        for _ in range(100000):
            if sched._pending:
                break
            await asyncio.sleep(0)
        assert sched.queued == 30
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sched.queued

    try:
        assert asyncio.run(main()) == 0
    finally:
        sched.close()
    text = m.render()[0].decode()
    assert metric(text, "crossrank_pairs_total") == 0
    assert metric(text, "crossrank_dropped_pairs_total") == 30


def test_drain_fails_what_cannot_finish(rr):
    """On shutdown, queued requests beyond what the measured rate finishes in the time left
    are answered Stopped (503) at once; the others are scored."""
    # one tokenizer thread: requests enter the queue in the order they were sent (with two,
    # the second can finish tokenizing first and take the first place in line)
    sched = Scheduler(rr, Metrics(), max_wait_ms=1500, tokenizer_workers=1)
    sched.start()
    per = 10  # pairs per request: ten requests stay under one batch, waiting to fill

    async def main():
        await sched.score(QUERY, docs_for(1, 20), ChunkSpec())  # measures the rate
        tasks = [
            asyncio.create_task(sched.score(QUERY, docs_for(10 + i, per), ChunkSpec()))
            for i in range(10)
        ]
        while len({job for job, _ in sched._pending}) < 10:
            await asyncio.sleep(0.001)
        # time left for 2.5 requests at the measured rate (with the safety margin)
        failed = sched.drain(2.5 * per / sched.rate / DRAIN_MARGIN)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(Stopped):
            await sched.score(QUERY, ["a"], ChunkSpec())
        return failed, results

    try:
        failed, results = asyncio.run(main())
    finally:
        sched.close()
    kept = [not isinstance(r, BaseException) for r in results]
    assert failed == 8 and kept == [True, True] + [False] * 8  # FIFO: the first two finish
    assert all(isinstance(r, Stopped) for r in results[2:])
    for (logits, _), i in zip(results[:2], range(2)):
        want = rr.compute_score([[QUERY, d] for d in docs_for(10 + i, per)])
        np.testing.assert_allclose(logits, want, atol=TOL, rtol=0)


def test_drain_lets_admitted_requests_in_while_there_is_time(rr):
    """Requests admitted before the shutdown but still being tokenized are scored when the
    time left allows them, and refused (Stopped) when it does not."""
    sched = Scheduler(rr, Metrics(), max_wait_ms=1, tokenizer_workers=1)
    sched.start()
    gate = threading.Event()

    async def main():
        await sched.score(QUERY, docs_for(1, 20), ChunkSpec())  # measures the rate
        sched._pool.submit(gate.wait)  # the one tokenizer thread is busy
        first = asyncio.create_task(sched.score(QUERY, docs_for(2, 8), ChunkSpec()))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(sched.score(QUERY, docs_for(3, 8), ChunkSpec()))
        while sched.queued < 16:  # both admitted, waiting for the tokenizer
            await asyncio.sleep(0.001)
        sched.drain(10 / sched.rate / DRAIN_MARGIN * 1.05)  # time for 10 pairs
        with pytest.raises(Stopped):  # nothing new is admitted
            await sched.score(QUERY, ["a"], ChunkSpec())
        gate.set()
        return await asyncio.gather(first, second, return_exceptions=True)

    try:
        first, second = asyncio.run(main())
    finally:
        gate.set()
        sched.close()
    want = rr.compute_score([[QUERY, d] for d in docs_for(2, 8)])
    np.testing.assert_allclose(first[0], want, atol=TOL, rtol=0)
    assert isinstance(second, Stopped)  # 8 more pairs do not fit in the 2 left
    assert sched.queued == 0


class CountingBackend:
    """A backend passing batches on to another, counting the rows it computes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.device, self.model = inner.name, inner.device, inner.model
        self.n_outputs = inner.n_outputs
        self.rows = 0

    def workers_for(self, n_pairs, n_batches):
        return self.inner.workers_for(n_pairs, n_batches)

    def score(self, batch):
        self.rows += batch.shape[0]
        return self.inner.score(batch)


def test_duplicates_in_a_window_are_scored_once(bert_dir):
    """Identical pairs, within a request and across the requests of one window, run once."""
    counted = Reranker(bert_dir, device="cpu", max_length=64)
    backend = counted.engine.backend = CountingBackend(counted.engine.backend)
    sched = Scheduler(counted, Metrics(), max_wait_ms=500)
    sched.start()
    docs = ["the giant panda", "debian", "the giant panda", "free search"]

    async def main():
        return await asyncio.gather(*(sched.score(QUERY, docs, ChunkSpec()) for _ in range(3)))

    try:
        results = asyncio.run(main())
    finally:
        sched.close()
    assert backend.rows == 3  # 12 pairs, 3 distinct
    want = counted.compute_score([[QUERY, d] for d in docs])
    for logits, _ in results:
        np.testing.assert_allclose(logits, want, atol=TOL, rtol=0)
    assert sched.queued == 0


def test_several_outputs_per_pair_through_the_scheduler(minicpm_dir):
    """A layerwise model with two cutoff layers: one score per layer per document, as
    compute_layer_scores gives them (the scheduler sizes its scores by the model's outputs)."""
    layered = Reranker(minicpm_dir, device="cpu", max_length=64, cutoff_layers=[2, 3])
    sched = Scheduler(layered, Metrics(), max_wait_ms=1, max_batch_tokens=128)
    sched.start()
    docs = docs_for(4, 6)

    async def main():
        return await sched.score(QUERY, docs, ChunkSpec(max_chunks_per_doc=2, chunk_overlap=4))

    try:
        logits, _ = asyncio.run(main())
    finally:
        sched.close()
    pairs = [[QUERY, d] for d in docs]
    want = layered.compute_layer_scores(pairs, max_chunks_per_doc=2, chunk_overlap=4)
    assert logits.shape == (len(docs), 2)
    np.testing.assert_allclose(logits[:, 0], want[2], atol=TOL, rtol=0)
    np.testing.assert_allclose(logits[:, 1], want[3], atol=TOL, rtol=0)


def test_the_app_refuses_a_model_with_several_outputs(minicpm_dir):
    """Every API gives one score per document: two cutoff layers are refused at once."""
    from crossrank.errors import CrossrankError

    layered = Reranker(minicpm_dir, device="cpu", max_length=64, cutoff_layers=[2, 3])
    with pytest.raises(CrossrankError, match=r"--cutoff-layers 2 3: .*one score per document"):
        create_app(layered, ServerSettings())
    single = Reranker(minicpm_dir, device="cpu", max_length=64, cutoff_layers=[3])
    create_app(single, ServerSettings())  # one layer is served
