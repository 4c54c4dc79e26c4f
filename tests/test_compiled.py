"""torch.compile of the int8 decoder layers (crossrank.models.compiled): used where a C++
compiler is, off with CROSSRANK_COMPILE=0 (the test session's default, conftest.py), and the
compiled layers score as the uncompiled ones. Not in the isa set: compiling under the emulator
takes minutes."""

from __future__ import annotations

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.models import compiled

PAIRS = [
    ["how do I install a web server", "nginx is a small and fast web server"],
    ["how do I install a web server", "gzip"],
    ["tool to resize images", "imagemagick converts, resizes and edits images"],
    ["tool to resize images", "a library of small utilities for the shell and scripts"],
]


def test_off_without_a_compiler_or_when_asked(monkeypatch):
    monkeypatch.setenv("CROSSRANK_COMPILE", "1")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    assert compiled.cpp_compiler() is None and not compiled.enabled()
    monkeypatch.undo()
    monkeypatch.setenv("CROSSRANK_COMPILE", "0")
    assert not compiled.enabled()


@pytest.mark.skipif(compiled.cpp_compiler() is None, reason="needs a C++ compiler")
def test_compiled_int8_layers_score_as_the_eager_ones(gemma_dir, monkeypatch):
    eager = np.array(Reranker(gemma_dir, device="cpu", quantize="int8").compute_score(PAIRS))
    monkeypatch.setenv("CROSSRANK_COMPILE", "1")
    rr = Reranker(gemma_dir, device="cpu", quantize="int8")
    assert all(layer._compiled_call_impl is not None for layer in rr.model.model.layers)
    got = np.array(rr.compute_score(PAIRS))
    again = np.array(rr.compute_score(PAIRS[::-1]))[::-1]  # other batch shapes: no error
    np.testing.assert_allclose(got, eager, atol=1e-3 * np.ptp(eager) + 1e-5)
    np.testing.assert_allclose(again, got, atol=1e-3 * np.ptp(eager) + 1e-5)
    # the exact path is never compiled
    exact = Reranker(gemma_dir, device="cpu")
    assert all(layer._compiled_call_impl is None for layer in exact.model.model.layers)
