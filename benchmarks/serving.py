"""A real ``crossrank serve`` for the server benchmarks: a free loopback port, started as a
subprocess, ready once ``/health`` answers 200, stopped on exit (:func:`started`: any server
command so, llama.cpp's too)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def started(
    cmd: list[str], base: str, *, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen]:
    """Run the server command ``cmd`` (listening at ``base``), yield its process once
    ``base/health`` answers 200, stop it on exit; its output goes to ``log`` (default:
    inherited). RuntimeError when it exits or is not ready within 5 minutes."""
    import httpx

    out = open(log, "w") if log else None  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(log.read_text() if log else f"{cmd[0]} exited")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{cmd[0]} did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if out:
            out.close()


@contextmanager
def serve(
    args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``crossrank serve ARGS --host 127.0.0.1 --port <free>``: yields ``(base URL, process)``
    once ready; its output goes to ``log`` (default: inherited)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "crossrank", "serve", *args, "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    try:
        with started(cmd, base, env=env, log=log) as proc:
            yield base, proc
    except RuntimeError as exc:  # the benchmarks stop with the server's output
        raise SystemExit(str(exc)) from None
