"""Helpers of the server tests: request data, readiness, error shapes, a real ``crossrank serve``
subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSRANK_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


class Served:
    """A running server: ``base`` URL, ``proc``, ``log`` (its stdout and stderr)."""

    def __init__(self, proc: subprocess.Popen, base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextmanager
def serving(model: Path, log: Path, *args: str, env: dict[str, str] | None = None):
    """Start ``crossrank serve --model MODEL ARGS`` and wait until /health says ok."""
    port = free_port()
    cmd = [sys.executable, "-m", "crossrank", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--device", "cpu", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=serve_env(**(env or {})), stdout=out, stderr=out)
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server not ready in 120 s\n" + log.read_text()
            try:
                if httpx.get(f"{served.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def metric(base: str, name: str, headers: dict[str, str] | None = None) -> float:
    """The value of an unlabelled metric of a running server."""
    text = httpx.get(f"{base}/metrics", headers=headers or {}, timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


QUERY = "what is panda"
DOCS = [
    "the giant panda is a bear",
    "debian is a free operating system for your computer",
    "pandas eat bamboo and live in the mountains",
    "hello",
    "search engines rank documents",
]


def wait_ready(client) -> None:
    """Wait until an in-process client's app reports ready."""
    for _ in range(500):
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError(f"never ready: {client.get('/health').json()}")


def ready_client(rr, **settings):
    """A ready TestClient of ``create_app(rr, ServerSettings(**settings))`` (a generator for a
    fixture: ``yield from ready_client(rr, max_wait_ms=1)``)."""
    from fastapi.testclient import TestClient

    from crossrank.server.app import create_app
    from crossrank.server.settings import ServerSettings

    with TestClient(create_app(rr, ServerSettings(**settings))) as c:
        wait_ready(c)
        yield c


def assert_error_shape(path: str, body: dict) -> None:
    """TEI ``{error, error_type}``, Cohere v1 / Jina ``{message, detail}``, v2 ``{message}``,
    vLLM ``{error: {message, type, param, code}}``."""
    if path in ("/score", "/v1/score", "vllm"):
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        assert error["message"] and error["type"].endswith("Error"), body
        assert isinstance(error["code"], int) and 400 <= error["code"] < 600, body
        return
    want = {
        "/rerank": {"error", "error_type"},
        "/v1/rerank": {"message", "detail"},
        "/v2/rerank": {"message"},
    }[path]
    assert set(body) == want, body
    assert all(isinstance(v, str) and v for v in body.values())


#: debian package descriptions and queries that the verify tests send to real services
PACKAGE_DOCS = [
    "apache2: Apache HTTP Server",
    "nginx: small, powerful, scalable web/proxy server",
    "vim: Vi IMproved - enhanced vi editor",
    "emacs: GNU Emacs editor",
    "git: fast, scalable, distributed revision control system",
    "lighttpd: fast webserver with minimal memory footprint",
    "0ad: real-time strategy game of ancient warfare",
]
PACKAGE_QUERIES = ["web server", "text editor", "version control", "strategy game"]
