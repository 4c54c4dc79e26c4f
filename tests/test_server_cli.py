"""``crossrank serve`` as a real uvicorn subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("uvicorn")

import httpx  # noqa: E402

from crossrank.reranker import Reranker, sigmoid  # noqa: E402

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docs_for(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(n)]


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSRANK_")}
    env.update(extra)
    return env


def queue_depth(base: str) -> float:
    text = httpx.get(f"{base}/metrics", headers=AUTH, timeout=5).text
    for line in text.splitlines():
        if line.startswith("crossrank_queue_pairs "):
            return float(line.split()[1])
    return 0.0


def test_real_server_scores_concurrency_and_graceful_shutdown(bert_dir, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = serve_env(
        CROSSRANK_MAX_LENGTH="64",  # flags from the environment
        CROSSRANK_API_KEY=KEY,
        CROSSRANK_MAX_WAIT_MS="400",
        CROSSRANK_DEVICE="cpu",
    )
    cmd = [sys.executable, "-m", "crossrank", "serve", "--model", str(bert_dir)]
    cmd += ["--port", str(port), "--max-batch-tokens", "1024"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server not ready in 90 s\n" + log.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:  # no key needed
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)

        info = httpx.get(f"{base}/info", headers=AUTH, timeout=5).json()
        assert info["max_length"] == 64 and info["auth"] is True
        assert info["max_batch_tokens"] == 1024
        assert httpx.get(f"{base}/info", timeout=5).status_code == 401

        rr = Reranker(bert_dir, device="cpu", max_length=64)
        jobs = [(i % 3, f"{QUERY} {i}", docs_for(i, 4 + i % 5)) for i in range(12)]

        def call(job):
            kind, query, docs = job
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
                if kind == 0:
                    r = c.post("/rerank", json={"query": query, "texts": docs, "raw_scores": True})
                    return {x["index"]: x["score"] for x in r.json()}
                path = "/v1/rerank" if kind == 1 else "/v2/rerank"
                r = c.post(path, json={"model": "m", "query": query, "documents": docs})
                return {x["index"]: x["relevance_score"] for x in r.json()["results"]}

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(call, jobs))
        for (kind, query, docs), got in zip(jobs, results):
            want = np.asarray(rr.compute_score([[query, d] for d in docs]), dtype=np.float32)
            if kind:
                want = sigmoid(want)
            np.testing.assert_allclose([got[i] for i in range(len(docs))], want, atol=1e-5)

        # SIGTERM with a request in flight: it is answered, then the server exits 0
        in_flight: dict[str, httpx.Response] = {}

        def slow():
            body = {"query": QUERY, "texts": ["the giant panda"], "raw_scores": True}
            in_flight["r"] = httpx.post(f"{base}/rerank", json=body, headers=AUTH, timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        for _ in range(300):  # until it waits in the queue (its batch waits up to 400 ms)
            if queue_depth(base) > 0:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the request never showed in the queue")
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        r = in_flight["r"]
        assert r.status_code == 200
        want = rr.compute_score([[QUERY, "the giant panda"]])[0]
        assert r.json()[0]["score"] == pytest.approx(want, abs=1e-5)
        assert proc.wait(30) == 0
        text = log.read_text()
        assert "Traceback" not in text
        assert '"POST /rerank HTTP/1.1" 200' in text  # one access line per request
        assert '"GET /info HTTP/1.1" 401' in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "args,env,needle",
    [
        (["--model", "/nonexistent/model"], {}, "nonexistent"),
        (["--model", "M"], {"CROSSRANK_PORT": "eighty"}, "--port"),
        (["--model", "M"], {"CROSSRANK_CHUNKING": "maybe"}, "CROSSRANK_CHUNKING"),
        (["--model", "M", "--max-wait-ms", "-1"], {}, "max_wait_ms"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args, env, needle):
    cmd = [sys.executable, "-m", "crossrank", "serve", *args]
    p = subprocess.run(cmd, env=serve_env(**env), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_model_from_environment(bert_dir):
    """CROSSRANK_MODEL sets --model (checked by parsing only)."""
    from crossrank.cli import build_parser

    old = os.environ.get("CROSSRANK_MODEL")
    os.environ["CROSSRANK_MODEL"] = str(bert_dir)
    os.environ["CROSSRANK_MAX_QUEUED_PAIRS"] = "7"
    try:
        args = build_parser().parse_args(["serve"])
        assert args.model == str(bert_dir) and args.max_queued_pairs == 7
        args = build_parser().parse_args(["serve", "--max-queued-pairs", "9"])
        assert args.max_queued_pairs == 9  # the command line wins
    finally:
        os.environ.pop("CROSSRANK_MAX_QUEUED_PAIRS")
        if old is None:
            os.environ.pop("CROSSRANK_MODEL")
        else:
            os.environ["CROSSRANK_MODEL"] = old


def test_disconnected_client_pairs_are_dropped(bert_dir, tmp_path):
    """A raw socket sends a big request and closes mid-request: the pairs counter stops
    rising well before the request's pairs are all scored, and the rest are counted dropped."""
    import json

    from server_helpers import metric, serving

    n = 1000
    args = ["--max-length", "64", "--max-batch-tokens", "128", "--max-wait-ms", "0"]
    with serving(bert_dir, tmp_path / "serve.log", *args) as srv:
        body = json.dumps({"query": QUERY, "texts": docs_for(5, n)}).encode()
        head = (
            f"POST /rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        port = int(srv.base.rsplit(":", 1)[1])
        start = metric(srv.base, "crossrank_pairs_total")  # the warm-up's
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head + body)
            deadline = time.monotonic() + 60
            while metric(srv.base, "crossrank_pairs_total") < start + 20:
                assert time.monotonic() < deadline, "scoring never started"
                time.sleep(0.02)
        # the socket is closed: at most the batch in flight is still scored
        time.sleep(1.0)
        settled = metric(srv.base, "crossrank_pairs_total")
        time.sleep(1.5)
        assert metric(srv.base, "crossrank_pairs_total") == settled
        assert settled - start < n
        dropped = metric(srv.base, "crossrank_dropped_pairs_total")
        assert dropped > 0 and settled - start + dropped == n
        assert metric(srv.base, "crossrank_queue_pairs") == 0
        # the server serves the next client
        r = httpx.post(f"{srv.base}/rerank", json={"query": QUERY, "texts": ["a"]}, timeout=30)
        assert r.status_code == 200
        assert srv.stop() == 0
    log = srv.text()
    assert "Traceback" not in log and '"POST /rerank HTTP/1.1" 499' in log


def test_sigterm_under_load_answers_503_quietly(bert_dir, tmp_path):
    """SIGTERM with more queued work than the graceful timeout allows: every request gets
    200 or a JSON 503, none a 500, and the log has no traceback."""
    from server_helpers import serving

    # one pair per forward pass: the queued work takes longer than the graceful timeout even
    # on a fast, quiet machine
    args = ["--max-length", "64", "--batch-size", "1", "--graceful-timeout", "2"]
    with serving(bert_dir, tmp_path / "serve.log", *args) as srv:
        rate_probe = httpx.post(
            f"{srv.base}/rerank", json={"query": QUERY, "texts": docs_for(1, 200)}, timeout=60
        )
        assert rate_probe.status_code == 200
        results: list[httpx.Response | Exception] = []

        def call(i: int) -> None:
            try:
                body = {"query": f"{QUERY} {i}", "texts": docs_for(100 + i, 300)}
                results.append(httpx.post(f"{srv.base}/rerank", json=body, timeout=60))
            except Exception as exc:  # connection refused after the listener closed
                results.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # all sent, most of them queued
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert srv.proc.wait(60) == 0
    answered = [r for r in results if isinstance(r, httpx.Response)]
    codes = sorted(r.status_code for r in answered)
    assert set(codes) <= {200, 429, 503}, codes
    assert 503 in codes, codes
    for r in answered:
        if r.status_code == 503:
            assert r.json()["error_type"] == "Unhealthy" and r.json()["error"]
    refused = [r for r in results if not isinstance(r, httpx.Response)]
    assert all(isinstance(e, httpx.TransportError) for e in refused), refused
    log = srv.text()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]


def test_two_cutoff_layers_are_refused_at_start(minicpm_dir):
    """Every API gives one score per document: ``--cutoff-layers 2 3`` is one line and exit 2
    (it used to start, fail its warm-up and answer 503 "not ready" for ever)."""
    cmd = [sys.executable, "-m", "crossrank", "serve", "-m", str(minicpm_dir)]
    cmd += ["--cutoff-layers", "2", "3", "--device", "cpu", "--port", str(free_port())]
    p = subprocess.run(cmd, env=serve_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossrank: error: --cutoff-layers 2 3:"), lines
    assert "one score per document" in lines[0]


def test_a_layerwise_model_serves_one_cutoff_layer(minicpm_dir, tmp_path):
    from server_helpers import serving

    docs = docs_for(3, 5)
    args = ["--cutoff-layers", "3", "--max-length", "64"]
    with serving(minicpm_dir, tmp_path / "serve.log", *args) as srv:
        body = {"query": QUERY, "texts": docs, "raw_scores": True}
        r = httpx.post(f"{srv.base}/rerank", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert srv.stop() == 0
    got = {x["index"]: x["score"] for x in r.json()}
    rr = Reranker(minicpm_dir, device="cpu", max_length=64, cutoff_layers=3)
    want = rr.compute_score([[QUERY, d] for d in docs])
    np.testing.assert_allclose([got[i] for i in range(len(docs))], want, atol=1e-5)


def test_a_model_that_fails_its_warm_up_exits_non_zero(bert_dir, tmp_path):
    """A checkpoint that loads but cannot score (its embedding table is smaller than its
    tokenizer's vocabulary): ``crossrank serve`` exits 1 with one clear last line, instead of
    answering 503 "not ready" for ever."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(bert_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[name] = tensors[name][:5].clone()
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "vocab_size": 5}))

    cmd = [sys.executable, "-m", "crossrank", "serve", "-m", str(broken), "--device", "cpu"]
    cmd += ["--port", str(free_port())]
    p = subprocess.run(cmd, env=serve_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("crossrank: error: the model could not be started: "), last
    assert "IndexError" in last
