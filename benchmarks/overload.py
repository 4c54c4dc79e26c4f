"""A bounded overload run of ``crossrank serve`` on the loopback: is every request answered?

Three phases against one real ``crossrank serve`` subprocess (127.0.0.1 only):

1. ``--clients`` clients, each sending ``--docs``-document requests back to back for
   ``--seconds`` s (a client waits ``Retry-After``, at most 5 s, after a 429);
2. the same number of clients that each send one request and disconnect mid-request;
3. SIGTERM after ``--ramp`` s of the load of phase 1 (the server has ``--graceful-timeout`` s).

Every client has a ``--timeout`` s timeout (60 s, a common default). Reported: the status codes
of each phase, requests that got no answer before their timeout, 5xx other than 503, the
p50 / p99 latency of accepted (200) requests, pairs/s held (from the server's counter), and the
server's peak RSS. Requests are BM25 top-``--docs`` lists from a BEIR dataset (``--data``) or,
without it, synthetic documents. Nothing here is a test: figures depend on the machine.

Example:
    python benchmarks/overload.py --model crossrank/minilm-debian --data ../shared/data/debian-ir
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


def requests_from(data: Path | None, docs: int, n: int = 64) -> list[tuple[str, list[str]]]:
    if data is None:
        rng = random.Random(0)
        words = [
            "debian",
            "package",
            "free",
            "software",
            "kernel",
            "install",
            "system",
            "network",
            "file",
            "user",
        ]
        return [
            (f"query {i}", [" ".join(rng.choices(words, k=80)) for _ in range(docs)])
            for i in range(n)
        ]
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_server import load_requests

    return load_requests(data, n, docs)


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def client_loop(base, reqs, until, timeout, out):
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as c:
        i = random.randrange(len(reqs))
        while time.monotonic() < until:
            q, docs = reqs[i % len(reqs)]
            i += 1
            t0 = time.monotonic()
            try:
                r = await c.post("/rerank", json={"query": q, "texts": docs, "raw_scores": True})
                out.append((r.status_code, time.monotonic() - t0))
                if r.status_code == 429:
                    wait = min(5.0, float(r.headers.get("retry-after", "1")))
                    await asyncio.sleep(min(wait, max(0.0, until - time.monotonic())))
            except httpx.TimeoutException:
                out.append(("timeout", time.monotonic() - t0))
            except httpx.TransportError as exc:  # the listener is closed (shutdown)
                out.append((f"refused:{type(exc).__name__}", time.monotonic() - t0))
                return


async def abandon(base, req, after):
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"query": req[0], "texts": req[1]}).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /rerank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(after)
    writer.close()


def summary(name, results, pairs, seconds):
    codes = Counter(str(code) for code, _ in results)
    ok = [t for code, t in results if code == 200]
    p50, p99 = (np.percentile(ok, 50), np.percentile(ok, 99)) if ok else (float("nan"),) * 2
    bad = sum(n for code, n in codes.items() if code.startswith("5") and code != "503")
    row = {
        "phase": name,
        "requests": len(results),
        "codes": dict(sorted(codes.items())),
        "5xx_not_503": bad,
        "timeouts": codes.get("timeout", 0),
        "p50_s": round(float(p50), 2),
        "p99_s": round(float(p99), 2),
        "max_s": round(max((t for _, t in results), default=0.0), 2),
        "pairs_per_s": round(pairs / seconds, 1),
    }
    print(json.dumps(row), flush=True)
    return row


async def main_async(args, base, proc, reqs):
    rows = []
    # 1. sustained overload
    p0 = await asyncio.to_thread(metric, base, "crossrank_pairs_total")
    t0, out = time.monotonic(), []
    until = time.monotonic() + args.seconds
    await asyncio.gather(
        *(client_loop(base, reqs, until, args.timeout, out) for _ in range(args.clients))
    )
    dt = time.monotonic() - t0
    pairs = await asyncio.to_thread(metric, base, "crossrank_pairs_total") - p0
    rows.append(summary("overload", out, pairs, dt))
    # 2. clients that disconnect mid-request, then one normal request
    p0 = await asyncio.to_thread(metric, base, "crossrank_pairs_total")
    d0 = await asyncio.to_thread(metric, base, "crossrank_dropped_pairs_total")
    await asyncio.gather(
        *(abandon(base, reqs[i % len(reqs)], 0.5 + i * 0.01) for i in range(args.clients))
    )
    await asyncio.sleep(2.0)
    t0 = time.monotonic()
    after: list = []
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout) as c:
        q, docs = reqs[0]
        r = await c.post("/rerank", json={"query": q, "texts": docs})
        after.append((r.status_code, time.monotonic() - t0))
    dropped = await asyncio.to_thread(metric, base, "crossrank_dropped_pairs_total") - d0
    scored = await asyncio.to_thread(metric, base, "crossrank_pairs_total") - p0
    row = summary("after-disconnects", after, scored, 1.0)
    row.update(abandoned=args.clients, pairs_dropped=dropped, pairs_scored=scored)
    print(json.dumps({"abandoned": args.clients, "dropped": dropped, "scored": scored}))
    rows.append(row)
    # 3. SIGTERM under load
    out = []
    until = time.monotonic() + args.graceful_timeout + args.timeout
    load = asyncio.gather(
        *(client_loop(base, reqs, until, args.timeout, out) for _ in range(args.clients))
    )
    await asyncio.sleep(args.ramp)
    t0 = time.monotonic()
    rss = peak_rss_mib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    await load
    code = await asyncio.to_thread(proc.wait, 120)
    dt = time.monotonic() - t0
    rows.append(summary("sigterm", out, float("nan"), dt))
    rows[-1].update(exit_code=code, shutdown_s=round(dt, 1))
    return rows, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="crossrank/minilm-debian")
    ap.add_argument("--data", type=Path, default=None, help="a BEIR dataset with a BM25 run")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--timeout", type=float, default=60, help="each client's timeout")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--graceful-timeout", type=float, default=30)
    ap.add_argument("--ramp", type=float, default=10, help="seconds of load before SIGTERM")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    ap.add_argument("--log", type=Path, default=Path("overload-serve.log"))
    args = ap.parse_args()
    reqs = requests_from(args.data, args.docs)
    from serving import serve

    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSRANK_")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = ["--model", args.model, "--device", "cpu", "--max-length", str(args.max_length)]
    cmd += ["--graceful-timeout", str(args.graceful_timeout)]
    with serve(cmd, env=env, log=args.log) as (base, proc):
        info = httpx.get(f"{base}/info", timeout=10).json()
        print(
            f"model {args.model}, max_length {args.max_length}, {args.docs} docs/request, "
            f"{args.clients} clients, max_queue_wait {info['max_queue_wait']:g} s, "
            f"max_batch_tokens {info['max_batch_tokens']}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        rows, rss = asyncio.run(main_async(args, base, proc, reqs))
    text = args.log.read_text()
    print(
        json.dumps(
            {
                "peak_rss_mib": round(rss, 1),
                "tracebacks_in_log": text.count("Traceback"),
                "load_after": round(os.getloadavg()[0], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
