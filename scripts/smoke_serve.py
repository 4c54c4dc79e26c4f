#!/usr/bin/env python3
"""Smoke test of a running ``crossrank serve`` (standard library only).

Used by scripts/check-wheel.sh (a server from a freshly installed wheel) and
scripts/build-image.sh (a server in the container image):

    smoke_serve.py --url http://127.0.0.1:8080 [--wait 300] [--drain 'kill -TERM 123']

1. waits until ``GET /health`` answers 200 (at most ``--wait`` seconds);
2. ``POST /rerank`` (TEI API) with the bundled example query and three documents, and checks
   that every document gets a finite score and the relevant one ranks first;
3. with ``--drain CMD``: sends a larger ``/rerank`` request, runs CMD (which should send
   SIGTERM to the server) while it is being scored, and checks that the request in flight is
   still answered 200 with every score (the server drains before it exits). The caller checks
   the server's exit status.

Prints one line per step; exits 1 at the first failure.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

QUERY = "how do I keep a package from being upgraded?"
DOCS = [
    "The giant panda is a bear native to south central China.",
    "Use apt-mark hold <package> to stop apt from upgrading a package; apt-mark unhold "
    "reverses it.",
    "Debian releases are named after characters from the Toy Story films.",
]


def call(url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def fail(msg: str) -> None:
    print(f"smoke: FAIL: {msg}", flush=True)
    sys.exit(1)


def wait_health(base: str, wait: float) -> None:
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < wait:
        try:
            status, body = call(base + "/health", timeout=5)
            if status == 200:
                print(f"smoke: GET /health -> 200 {body} after {time.monotonic() - start:.1f} s")
                return
            last = f"{status} {body}"
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.5)
    fail(f"/health not 200 within {wait:.0f} s (last: {last})")


def check_scores(body: object, n: int) -> list[dict]:
    if not isinstance(body, list) or len(body) != n:
        fail(f"/rerank: expected {n} results, got {body!r}"[:500])
    for r in body:
        if not isinstance(r.get("score"), float) or not math.isfinite(r["score"]):
            fail(f"/rerank: bad score in {r!r}")
    return body


def rerank(base: str) -> None:
    status, body = call(base + "/rerank", {"query": QUERY, "texts": DOCS})
    if status != 200:
        fail(f"POST /rerank -> {status} {body}")
    ranked = check_scores(body, len(DOCS))
    if ranked[0]["index"] != 1:
        fail(f"/rerank: the apt-mark document should rank first, got {ranked}")
    shown = ", ".join(f"{r['index']}: {r['score']:.3f}" for r in ranked)
    print(f"smoke: POST /rerank -> 200 [{shown}] (best first; index 1 is the relevant one)")


def drain(base: str, command: str, docs: int) -> None:
    texts = [f"{DOCS[i % len(DOCS)]} (copy {i})" for i in range(docs)]
    out: dict = {}

    def send() -> None:
        t0 = time.monotonic()
        try:
            out["status"], out["body"] = call(
                base + "/rerank", {"query": QUERY, "texts": texts}, timeout=300
            )
        except OSError as e:
            out["error"] = e
        out["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(1.0)  # the request is admitted and being scored
    if not thread.is_alive():
        fail(f"the {docs}-document request finished before SIGTERM; use more --drain-docs")
    print(f"smoke: request with {docs} documents in flight; running: {command}", flush=True)
    done = subprocess.run(shlex.split(command), capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{command} -> exit code {done.returncode}: {done.stderr.strip()}")
    thread.join()
    if "error" in out:
        fail(f"the request in flight at SIGTERM got no answer: {out['error']}")
    if out["status"] != 200:
        fail(f"the request in flight at SIGTERM -> {out['status']} {out['body']}"[:500])
    check_scores(out["body"], docs)
    print(
        f"smoke: the request in flight at SIGTERM -> 200 with {docs} scores after "
        f"{out['seconds']:.1f} s (drained)"
    )
    try:
        status, body = call(base + "/health", timeout=5)
        print(f"smoke: after SIGTERM GET /health -> {status} {body}")
    except OSError as e:
        print(f"smoke: after SIGTERM GET /health -> no connection ({type(e).__name__})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL of the server")
    p.add_argument("--wait", type=float, default=300, help="seconds to wait for /health")
    p.add_argument("--drain", metavar="CMD", help="command that sends SIGTERM to the server")
    p.add_argument("--drain-docs", type=int, default=150, help="documents of the drain request")
    args = p.parse_args()
    base = args.url.rstrip("/")
    wait_health(base, args.wait)
    rerank(base)
    if args.drain:
        drain(base, args.drain, args.drain_docs)
    print("smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
