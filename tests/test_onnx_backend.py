"""ONNX Runtime backend: parity with torch, int8, the on-disk export cache, missing extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from crossrank import Reranker  # noqa: E402
from crossrank.cpu import int8_scheme  # noqa: E402
from crossrank.engine.onnx_backend import OnnxBackend  # noqa: E402
from crossrank.engine.onnx_cache import cache_root  # noqa: E402
from crossrank.engine.onnx_quantize import SCHEMES  # noqa: E402
from crossrank.errors import CrossrankError  # noqa: E402

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

PAIRS = [
    ["what is panda?", "The giant panda is a bear species endemic to China."],
    ["what is panda?", "hi"],
    ["Debian", "Debian is a free operating system for your computer. " * 12],
    ["search engines rank documents " * 8, "cross-encoders rescore the top hundred candidates"],
    ["Die Katze", "Die Katze schläft auf dem Sofa, während es draußen regnet."],
    ["東京", "日本語の文章をトークン化します。東京は日本の首都です。"],
    ["熊猫", "我喜欢吃熊猫形状的饼干。熊猫是中国的国宝。"],
    ["Москва", "Быстрая коричневая лиса прыгает через ленивую собаку."],
    ["a", "b"],
]


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def many_pairs(n: int = 60) -> list[list[str]]:
    words = " ".join(p[1] for p in PAIRS).split()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        q = " ".join(rng.choice(words, size=rng.integers(1, 5)))
        p = " ".join(rng.choice(words, size=rng.integers(1, 40)))
        out.append([q, p])
    return out


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("fixture", ["bert_dir", "xlmr_dir"])
def test_fp32_matches_torch(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    pairs = PAIRS + many_pairs(40)
    ref = np.array(Reranker(model_dir, device="cpu").compute_score(pairs))
    onnx = Reranker(model_dir, device="cpu", backend="onnx")
    assert onnx.backend.name == "onnx" and onnx.model is None
    got = np.array(onnx.compute_score(pairs))
    assert ref.std() > 0.1  # scores spread out: the comparison bites
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # a batch of one and a mixed-length batch agree too
    single = onnx.compute_score(pairs[2])
    assert abs(single[0] - ref[2]) < 1e-4


def test_int8_runs_and_keeps_the_ranking():
    """On the bundled reranker (real weights, trained head: random tiny models with their wide
    weight range are not what int8 is for) int8 keeps the order of 60 pairs."""
    pairs = many_pairs(60)
    ref = np.array(Reranker("crossrank/minilm-debian", device="cpu").compute_score(pairs))
    rr = Reranker("crossrank/minilm-debian", device="cpu", backend="onnx", quantize="int8")
    got = np.array(rr.compute_score(pairs))
    nodes = __import__("onnx").load(str(rr.backend.path)).graph.node
    ops = {n.op_type for n in nodes}
    assert "QAttention" in ops and "EmbedLayerNormalization" in ops  # embeddings stay fp32
    per_token = {n.name for n in nodes if n.op_type == "MatMulIntegerToFloat"}
    assert per_token == {
        f"/ffn_{p}{s}/pt_matmul" for p in ("in", "out") for s in ("", "_1", "_2", "_3", "_4")
    }
    assert np.abs(got - ref).max() > 0  # quantization really happened
    assert spearman(got, ref) > 0.99


def test_int8_export_keeps_the_quantizers_advice_out_of_the_logs(bert_dir, caplog):
    """ONNX Runtime's quantizer logs advice on the root logger (nothing a user can act on):
    dropped while it runs, and the root logger is left as it was."""
    import logging

    root = logging.getLogger()
    filters, level = list(root.filters), root.level
    with caplog.at_level(logging.INFO):
        Reranker(bert_dir, device="cpu", backend="onnx", quantize="int8")
    assert not [r for r in caplog.records if "onnxruntime/quantization" in r.pathname]
    assert "exporting" in caplog.text  # crossrank's own records still pass
    assert root.filters == filters and root.level == level


@pytest.mark.parametrize("scheme", SCHEMES)
def test_per_token_product_quantizes_each_row_alone(scheme):
    """The feed-forward int8 product gives every row (token) its own activation scale: it
    equals a numpy per-row quantized product, and a row made 1000x larger leaves every other
    row's output bit for bit (with one scale per batch, as ONNX Runtime's own dynamic
    quantization does, the big row would coarsen the grid of all rows).

    u8 x u8 is exact on every CPU; u8 x s8 only where the CPU has int8 dot-product units (or is
    not x86): elsewhere its kernel saturates, which is why crossrank does not use it there."""
    if scheme == "u8s8" and int8_scheme() != "u8s8":
        pytest.skip("u8 x s8 saturates on x86 without VNNI / AMX (crossrank uses u8 x u8 here)")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from crossrank.engine.onnx_quantize import per_token_matmuls

    rng = np.random.default_rng(0)
    k, n = 64, 48
    w = (rng.standard_normal((k, n)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/ffn_in/MatMul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    per_token_matmuls(model, {"/ffn_in/MatMul"}, signed_weights=scheme == "u8s8")
    assert "MatMul" not in {node.op_type for node in model.graph.node}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = (rng.standard_normal((2, 5, k)) * rng.uniform(0.01, 10, (2, 5, 1))).astype(np.float32)
    (y,) = sess.run(None, {"x": x})

    m = np.abs(x).max(-1, keepdims=True)
    q = np.clip(np.rint(x / m * 127), -127, 127)
    w_scale = np.abs(w).max(0) / 127
    ref = (q @ np.clip(np.rint(w / w_scale), -127, 127)) * w_scale * m / 127
    scale = np.abs(ref).max(-1, keepdims=True)
    assert np.abs(y - ref).max() / scale.min() < 1e-3  # at most an odd rounding flip apart
    exact = x.astype(np.float64) @ w
    assert np.abs(y - exact).max() > 0  # really quantized
    assert (np.abs(y - exact).max(-1, keepdims=True) < 0.03 * scale).all()  # small rows too

    x_big = x.copy()
    x_big[0, 0] *= 1000
    (y_big,) = sess.run(None, {"x": x_big})
    np.testing.assert_array_equal(y_big[0, 1:], y[0, 1:])
    np.testing.assert_array_equal(y_big[1], y[1])


def test_cache_is_reused(bert_dir, onnx_cache):
    first = Reranker(bert_dir, device="cpu", backend="onnx").backend.path
    stat = first.stat()

    def must_not_export():
        raise AssertionError("re-exported although the cache holds the model")

    from crossrank.config import EncoderConfig, read_config
    from crossrank.families.encoder import FAMILY

    export = FAMILY.onnx_export(EncoderConfig.from_dict(read_config(bert_dir / "config.json")))
    again = OnnxBackend.from_checkpoint(bert_dir, must_not_export, export)
    assert again.path == first
    assert (again.path.stat().st_ino, again.path.stat().st_mtime_ns) == (
        stat.st_ino,
        stat.st_mtime_ns,
    )
    assert first.is_relative_to(onnx_cache)
    assert cache_root() == onnx_cache / "onnx"
    # fp32 and int8 are different cache entries
    q = Reranker(bert_dir, device="cpu", backend="onnx", quantize="int8").backend.path
    assert q != first


def test_changed_weights_rebuild(bert_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "model"
    shutil.copytree(bert_dir, model_dir)
    old = Reranker(model_dir, device="cpu", backend="onnx")
    old_scores = np.array(old.compute_score(PAIRS))
    weights = load_file(str(model_dir / "model.safetensors"))
    name = next(k for k in weights if k.endswith("classifier.weight"))
    weights[name] = weights[name] * 2 + torch.full_like(weights[name], 0.1)
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    new = Reranker(model_dir, device="cpu", backend="onnx")
    assert new.backend.path != old.backend.path
    new_scores = np.array(new.compute_score(PAIRS))
    assert np.abs(new_scores - old_scores).max() > 1e-2
    ref = np.array(Reranker(model_dir, device="cpu").compute_score(PAIRS))
    np.testing.assert_allclose(new_scores, ref, atol=1e-4, rtol=0)


def test_concurrent_first_use_builds_once(xlmr_dir, onnx_cache):
    script = textwrap.dedent(
        f"""
        import json, logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from crossrank import Reranker
        rr = Reranker({str(xlmr_dir)!r}, device="cpu", backend="onnx")
        print(json.dumps({{"path": str(rr.backend.path), "scores": rr.compute_score({PAIRS!r})}}))
        """
    )
    env = dict(os.environ, CROSSRANK_CACHE=str(onnx_cache))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert results[0]["path"] == results[1]["path"]
    np.testing.assert_allclose(results[0]["scores"], results[1]["scores"], atol=1e-6)
    exports = sum(e.count("exporting") for _, e in outs)
    assert exports == 1, "the second process should wait for the first one's export"
    entries = [p.name for p in (onnx_cache / "onnx").iterdir() if p.is_dir()]
    assert len(entries) == 1 and ".tmp-" not in entries[0]
    meta = json.loads((onnx_cache / "onnx" / entries[0] / "meta.json").read_text())
    assert meta["quantize"] is None


def test_killed_builds_leave_nothing_under_the_entry_name(bert_dir, onnx_cache):
    """The export builds in a temporary directory renamed into place (crossrank.atomic): an
    incomplete entry under the final name (no meta.json) is replaced, and the temporary of a
    build killed earlier (its process is gone) is removed by the next build."""
    from crossrank.atomic import temp_name
    from crossrank.engine.onnx_cache import cache_key

    key = cache_key(Path(bert_dir), None)
    root = cache_root()
    (root / key).mkdir(parents=True)
    (root / key / "exported.onnx").write_bytes(b"half an export")
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              stdout=subprocess.PIPE).stdout)  # fmt: skip
    killed = root / temp_name(key).replace(f"-{os.getpid()}-", f"-{dead}-")
    killed.mkdir()
    (killed / "exported.onnx").write_bytes(b"another half")
    backend = Reranker(bert_dir, device="cpu", backend="onnx").backend
    assert backend.path == root / key / "model.onnx"
    assert sorted(p.name for p in (root / key).iterdir()) == ["meta.json", "model.onnx"]
    assert sorted(p.name for p in root.iterdir()) == [key, f"{key}.lock"]


def test_missing_onnxruntime_names_the_extra(bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'crossrank\[onnx\]'"):
        Reranker(bert_dir, device="cpu", backend="onnx")


def test_bad_backend_options(bert_dir):
    with pytest.raises(CrossrankError, match="unknown backend"):
        Reranker(bert_dir, device="cpu", backend="tensorrt")
    with pytest.raises(CrossrankError, match="needs backend='onnx'"):
        Reranker(bert_dir, device="cpu", quantize="int8")
    with pytest.raises(CrossrankError, match="unknown quantize"):
        Reranker(bert_dir, device="cpu", backend="onnx", quantize="int4")


def test_cli_backend_options(bert_dir, tmp_path, onnx_cache):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS))
    outs = {}
    for name, extra in {"torch": [], "onnx": ["--backend", "onnx"]}.items():
        proc = subprocess.run(
            [sys.executable, "-m", "crossrank", "score", "--model", str(bert_dir)]
            + ["--input", str(src), "--device", "cpu", *extra],
            capture_output=True,
            text=True,
            env=dict(os.environ, CROSSRANK_CACHE=str(onnx_cache)),
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[name] = [json.loads(line)["score"] for line in proc.stdout.splitlines()]
    np.testing.assert_allclose(outs["onnx"], outs["torch"], atol=1e-4, rtol=0)
    assert any((onnx_cache / "onnx").iterdir())


def test_int8_is_quantized_from_the_fp32_entry(bert_dir, onnx_cache, tmp_path, monkeypatch, caplog):
    """With the fp32 entry in the cache (backend='auto' builds it first), int8 quantizes that
    export instead of exporting again, and gives the model an export from scratch gives."""
    import logging

    fp32 = Reranker(bert_dir, device="cpu", backend="onnx").backend.path
    with caplog.at_level(logging.INFO, logger="crossrank.engine.onnx_cache"):
        q = Reranker(bert_dir, device="cpu", backend="onnx", quantize="int8")
    assert "quantizing the fp32 export of" in caplog.text and "exporting" not in caplog.text
    meta = json.loads((q.backend.path.parent / "meta.json").read_text())
    assert meta["quantized_from"] == str(fp32)
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "fresh"))  # no fp32 entry there
    scratch = Reranker(bert_dir, device="cpu", backend="onnx", quantize="int8")
    assert (
        json.loads((scratch.backend.path.parent / "meta.json").read_text())["quantized_from"]
        is None
    )
    assert scratch.backend.path.read_bytes() == q.backend.path.read_bytes()
    np.testing.assert_array_equal(q.compute_score(PAIRS), scratch.compute_score(PAIRS))


def test_quantize_a_model_whose_weights_are_in_a_separate_file(bert_dir, tmp_path):
    """Over 2 GB an export keeps its weights beside the graph, in a file of any name (the
    fp32 entry's is the optimiser's): int8 finds them and gives the same model."""
    import onnx

    from crossrank.engine.onnx_quantize import external_data, quantize_int8

    fp32 = Reranker(bert_dir, device="cpu", backend="onnx").backend.path
    split = tmp_path / "split"
    split.mkdir()
    onnx.save(onnx.load(str(fp32)), str(split / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)  # fmt: skip
    assert external_data(split / "model.onnx") and not external_data(fp32)
    quantize_int8(split / "model.onnx", tmp_path / "from-split.onnx")
    quantize_int8(fp32, tmp_path / "from-inline.onnx")
    a = onnx.load(str(tmp_path / "from-split.onnx"))
    b = onnx.load(str(tmp_path / "from-inline.onnx"))
    assert a.graph.node == b.graph.node
    assert {t.name: t.raw_data for t in a.graph.initializer} == {
        t.name: t.raw_data for t in b.graph.initializer
    }


def test_checkpoint_is_hashed_once_while_unchanged(bert_dir, tmp_path):
    """Every ONNX / OpenVINO load hashes the checkpoint for its cache key: once per process
    while the files are unchanged, again after a weight file changes."""
    from crossrank.engine.onnx_cache import _content_hash, checkpoint_hash

    model_dir = tmp_path / "model"
    shutil.copytree(bert_dir, model_dir)
    first = checkpoint_hash(model_dir)
    misses = _content_hash.cache_info().misses
    assert checkpoint_hash(model_dir) == first and _content_hash.cache_info().misses == misses
    with open(model_dir / "model.safetensors", "ab") as fh:
        fh.write(b" ")
    assert checkpoint_hash(model_dir) != first and _content_hash.cache_info().misses == misses + 1
