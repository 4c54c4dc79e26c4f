"""The deterministic mode: a pair's score is bitwise the same whatever its batch, neighbours,
padding and thread count, for every family (property tests over random batchings)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crossrank import Reranker
from crossrank.engine.invariant import one_thread_kernels, score_alone

pytestmark = pytest.mark.isa

QUERIES = ["how do I install a web server", "tool to resize images", "zip files"]
PASSAGES = [
    "nginx is a small and fast web server",
    "apache2 is the Apache HTTP server, with modules for almost everything one could need "
    "from a web server, including TLS and proxying",
    "imagemagick converts, resizes and edits images from the command line",
    "gzip",
    "p7zip: 7z archiver with high compression ratio, reads zip and many other formats "
    "(and writes some of them) " * 2,
    "a library of small utilities",
]
#: 18 pairs of varied lengths, duplicates included (pair 0 again at the end)
PAIRS = [[q, p] for q in QUERIES for p in PASSAGES] + [[QUERIES[0], PASSAGES[0]]]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_one_thread_kernels_nest_and_restore_the_thread_count():
    torch.set_num_threads(2)
    with one_thread_kernels() as before:
        assert before == 2 and torch.get_num_threads() == 1
        with one_thread_kernels() as inner:
            assert inner == 2
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_score_alone_keeps_the_order_and_runs_one_thread_per_item():
    torch.set_num_threads(2)
    seen = score_alone(lambda i: np.array([i, torch.get_num_threads()]), list(range(5)))
    assert [s.tolist() for s in seen] == [[i, 1] for i in range(5)]
    assert torch.get_num_threads() == 2


def _alone(reranker: Reranker) -> np.ndarray:
    torch.set_num_threads(1)
    return np.stack([reranker.compute_score([p]) for p in PAIRS])[:, 0]


batchings = st.tuples(
    st.permutations(range(len(PAIRS))),
    st.lists(st.integers(1, len(PAIRS)), min_size=1, max_size=6),
    st.sampled_from([1, 2, 3]),
)


def _check(reranker: Reranker, alone: np.ndarray, batching) -> None:
    order, sizes, threads = batching
    torch.set_num_threads(threads)
    got = np.empty_like(alone)
    start, k = 0, 0
    while start < len(order):
        part = list(order[start : start + sizes[k % len(sizes)]])
        got[part] = reranker.compute_score([PAIRS[i] for i in part])
        start, k = start + len(part), k + 1
    np.testing.assert_array_equal(got, alone)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_deterministic_scores_do_not_depend_on_the_batch(family_dir, dtype):
    reranker = Reranker(str(family_dir), dtype=dtype, deterministic=True)
    alone = _alone(reranker)

    @settings(
        max_examples=4,
        deadline=None,
        phases=[Phase.generate],  # a failing batching is printed; shrinking would take minutes
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(batchings)
    def prop(batching):
        _check(reranker, alone, batching)

    prop()


def test_deterministic_scores_equal_the_exact_ones(family_dir):
    exact = Reranker(str(family_dir)).compute_score(PAIRS)
    det = Reranker(str(family_dir), deterministic=True).compute_score(PAIRS)
    np.testing.assert_allclose(det, exact, rtol=1e-4, atol=1e-4)


def test_deterministic_scores_hold_under_concurrent_calls(bert_dir):
    reranker = Reranker(str(bert_dir), deterministic=True)
    alone = _alone(reranker)
    torch.set_num_threads(2)
    halves = [PAIRS[::2], PAIRS[1::2]]
    with ThreadPoolExecutor(2) as pool:
        even, odd = pool.map(reranker.compute_score, halves)
    np.testing.assert_array_equal(even, alone[::2])
    np.testing.assert_array_equal(odd, alone[1::2])


def test_without_the_mode_scores_do_move_with_the_batch(bert_dir):
    """What the mode is for (and proof that the property above can fail): the exact path's
    scores of the same pairs differ in the last bits between alone and batched."""
    reranker = Reranker(str(bert_dir))
    torch.set_num_threads(2)
    batched = reranker.compute_score(PAIRS)
    alone = _alone(reranker)
    assert (batched != alone).any()


def test_score_command_takes_deterministic(bert_dir, tmp_path):
    import json

    from crossrank.cli import main

    src, out = tmp_path / "pairs.jsonl", tmp_path / "scores.jsonl"
    src.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS))
    assert (
        main(["score", "-m", str(bert_dir), "-i", str(src), "-o", str(out), "--deterministic"]) == 0
    )
    got = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    alone = _alone(Reranker(str(bert_dir), deterministic=True))
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), alone)


def test_deterministic_refuses_onnx_and_turns_auto_into_torch(bert_dir):
    from crossrank.errors import InputError

    with pytest.raises(InputError, match="deterministic=True needs backend='torch'"):
        Reranker(str(bert_dir), backend="onnx", deterministic=True)
    assert Reranker(str(bert_dir), backend="auto", deterministic=True).backend.name == "torch"
