"""``crossrank verify`` against real services: crossrank's own server (``crossrank serve`` in a
subprocess) in each backend, every API dialect, and a real HTTP proxy in front of it that
answers 503 / 429 / 500 to check retries and failures."""

from __future__ import annotations

import http.server
import json
import threading
from contextlib import contextmanager

import httpx
import pytest

pytest.importorskip("uvicorn")

from crossrank.cli import main  # noqa: E402
from crossrank.hub import BUNDLED_MODEL  # noqa: E402
from crossrank.verify.clients import DIALECTS, ServiceError  # noqa: E402
from crossrank.verify.groups import QueryGroup  # noqa: E402
from crossrank.verify.runner import verify  # noqa: E402
from crossrank.verify.scorers import build_scorer, parse_spec  # noqa: E402
from server_helpers import PACKAGE_DOCS, PACKAGE_QUERIES, serving  # noqa: E402

KEY = "verify-key"
MAX_LENGTH = "128"
DOCS, QUERIES = PACKAGE_DOCS, PACKAGE_QUERIES


def groups() -> list[QueryGroup]:
    ids = tuple(str(i) for i in range(len(DOCS)))
    return [QueryGroup(f"q{i}", q, ids, tuple(DOCS)) for i, q in enumerate(QUERIES)]


@pytest.fixture(scope="module")
def exact():
    scorer = build_scorer(
        parse_spec("dtype:fp32"), model=BUNDLED_MODEL, device="cpu", max_length=int(MAX_LENGTH)
    )
    yield scorer
    scorer.close()


@pytest.fixture(scope="module")
def fp32_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("verify-fp32") / "serve.log"
    env = {"CROSSRANK_API_KEY": KEY}
    with serving(BUNDLED_MODEL, log, "--max-length", MAX_LENGTH, env=env) as srv:
        yield srv


@pytest.mark.parametrize("api", sorted(DIALECTS))
def test_every_dialect_against_crossrank_serve(fp32_server, exact, api):
    """Each dialect's client reads crossrank's own server; the scores are the exact ones."""
    spec = parse_spec(f"url:{fp32_server.base},api:{api},key:{KEY},batch:3")
    service = build_scorer(spec, model=BUNDLED_MODEL)
    try:
        result = verify(groups(), exact, [service], concurrency=3)
    finally:
        service.close()
    c = result.candidates[0]
    assert c["failed_queries"] == 0 and c["queries"] == len(QUERIES), c
    assert c["scale"] == ("logit" if api == "tei" else "sigmoid")  # detected, or TEI raw
    assert c["max_abs_diff"] < 1e-4, c
    assert c["spearman"] == pytest.approx(1.0) and c["top1_agreement"] == 1.0
    assert c["requests"] == len(QUERIES) * 3  # 7 documents in requests of 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, max_diff, min_spearman",
    [
        (["--dtype", "bf16"], 0.2, 0.9),
        (["--backend", "onnx", "--quantize", "int8"], 0.5, 0.8),
    ],
    ids=["bf16", "onnx-int8"],
)
def test_backends_served(tmp_path, monkeypatch, args, max_diff, min_spearman, capsys):
    """crossrank serve in bf16 and ONNX int8 verified through the CLI against exact fp32."""
    log = tmp_path / "serve.log"
    env = {"CROSSRANK_CACHE": str(tmp_path / "cache")}
    if "onnx" in args:  # export here, not against the server's start-up deadline
        from crossrank.reranker import Reranker

        monkeypatch.setenv("CROSSRANK_CACHE", env["CROSSRANK_CACHE"])
        Reranker(BUNDLED_MODEL, device="cpu", backend="onnx", quantize="int8",
                 max_length=int(MAX_LENGTH))  # fmt: skip
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"query": q, "documents": DOCS}) + "\n" for q in QUERIES))
    with serving(BUNDLED_MODEL, log, "--max-length", MAX_LENGTH, *args, env=env) as srv:
        out = tmp_path / "v.json"
        code = main(["verify", "-m", BUNDLED_MODEL, "--device", "cpu", "--max-length", MAX_LENGTH,
                     "-i", str(queries), "-c", f"served=url:{srv.base},api:tei",
                     "--max-abs-diff", str(max_diff), "--min-spearman", str(min_spearman),
                     "-o", str(out)])  # fmt: skip
        assert code == 0, capsys.readouterr().out
        c = json.loads(out.read_text())["candidates"][0]
        assert 0 < c["max_abs_diff"] < max_diff and c["compared_on"] == "logit"
        # a tolerance it cannot meet: exit 1
        code = main(["verify", "-m", BUNDLED_MODEL, "--device", "cpu", "--max-length", MAX_LENGTH,
                     "-i", str(queries), "-c", f"served=url:{srv.base},api:tei",
                     "--max-abs-diff", "1e-7"])  # fmt: skip
        assert code == 1
        assert "tolerance served: FAILED: max_abs_diff" in capsys.readouterr().out


@contextmanager
def flaky_proxy(target: str, answers: list[int]):
    """A real HTTP server forwarding POSTs to ``target``; the first requests get the statuses
    of ``answers`` instead (503 / 429 with Retry-After: 0, anything else as given)."""
    hits: list[int] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                status = answers.pop(0) if answers else 200
                hits.append(status)
            if status != 200:
                self.send_response(status)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": "try later", "error_type": "Overloaded"}')
                return
            headers = {"Content-Type": "application/json"}
            if "Authorization" in self.headers:
                headers["Authorization"] = self.headers["Authorization"]
            r = httpx.post(target + self.path, content=body, headers=headers, timeout=60)
            self.send_response(r.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_retries_on_503_and_429(fp32_server, exact):
    with flaky_proxy(fp32_server.base, [503, 429, 503]) as (url, hits):
        service = build_scorer(
            parse_spec(f"url:{url},api:cohere-v2,key:{KEY}"), model=BUNDLED_MODEL, retries=3
        )
        result = verify(groups(), exact, [service], concurrency=1)
        service.close()
    c = result.candidates[0]
    assert hits[:3] == [503, 429, 503] and c["retried"] == 3
    assert c["failed_queries"] == 0 and c["max_abs_diff"] < 1e-4


def test_failing_service_counts_failed_queries(fp32_server, exact, capsys, tmp_path):
    """A 500 (not retried) or retries exhausted: that query fails for the candidate; with a
    tolerance given the run exits 1."""
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"query": q, "documents": DOCS}) + "\n" for q in QUERIES))
    with flaky_proxy(fp32_server.base, [500, 503, 503]) as (url, _):
        code = main(["verify", "-m", BUNDLED_MODEL, "--device", "cpu", "--max-length", MAX_LENGTH,
                     "-i", str(queries), "-c", f"p=url:{url},api:tei,key:{KEY}",
                     "--retries", "1", "--concurrency", "1", "--min-spearman", "0.99"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 1, text
    assert "2 queries failed (ServiceFailure:" in text and "HTTP 500" in text


@pytest.mark.parametrize(
    "spec, message",
    [
        ("url:{base},api:tei,key:wrong", "HTTP 401"),
        ("url:{base}/nowhere,api:tei,key:" + KEY, "HTTP 404"),
        # the wrong dialect: every request refused, so every query fails
        ("url:{base}/v2/rerank,api:vllm-score,key:" + KEY, "every query failed.*HTTP 422"),
    ],
)
def test_refused_requests_are_user_errors(fp32_server, exact, spec, message):
    service = build_scorer(parse_spec(spec.format(base=fp32_server.base)), model=BUNDLED_MODEL)
    with pytest.raises(ServiceError, match=message):
        verify(groups(), exact, [service])
    service.close()
