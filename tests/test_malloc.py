"""glibc's allocator set for CPU inference (crossrank.engine.malloc): applied once per process
when a CPU Reranker loads, off with CROSSRANK_MALLOC=default. Each case runs in a fresh
interpreter: the setting is process-wide."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

CODE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
from crossrank import Reranker
from crossrank.engine import malloc
Reranker(sys.argv[1], device="cpu", show_progress=False)
print("tuned", malloc.tune(), malloc.tune())
"""


def _run(model_dir, **env) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(model_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return proc.stdout


def test_a_cpu_reranker_sets_the_thresholds_once(bert_dir):
    out = _run(bert_dir)
    assert "tuned True True" in out
    assert out.count("mmap and trim thresholds set to 1 GiB") == 1


def test_default_leaves_glibc_alone(bert_dir):
    out = _run(bert_dir, CROSSRANK_MALLOC="default")
    assert "tuned False False" in out and "left alone" in out
