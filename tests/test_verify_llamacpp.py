"""``crossrank verify`` against a service no one here wrote: llama.cpp's ``llama-server
--reranking`` serving the bundled model converted to GGUF by llama.cpp's own converter.

scripts/llamacpp-verify.sh builds the server and the GGUF files under build/llamacpp/; without
them the tests are skipped (the reason names the script). ``LLAMACPP_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from crossrank.hub import BUNDLED_MODEL
from crossrank.verify.groups import QueryGroup
from crossrank.verify.runner import verify
from crossrank.verify.scorers import build_scorer, parse_spec
from server_helpers import PACKAGE_DOCS, PACKAGE_QUERIES, free_port

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("LLAMACPP_DIR", ROOT / "build" / "llamacpp"))
SERVER = BUILD / "bin" / "llama-server"

DOCS = [*PACKAGE_DOCS, "python3: interactive high-level object-oriented language"]
QUERIES = [*PACKAGE_QUERIES, "python"]


pytestmark = pytest.mark.skipif(
    not SERVER.is_file(), reason=f"no {SERVER}: run scripts/llamacpp-verify.sh build convert"
)


def groups() -> list[QueryGroup]:
    ids = tuple(str(i) for i in range(len(DOCS)))
    return [QueryGroup(f"q{i}", q, ids, tuple(DOCS)) for i, q in enumerate(QUERIES)]


def gguf(kind: str) -> Path:
    path = BUILD / f"model-{kind}.gguf"
    if not SERVER.is_file() or not path.is_file():
        pytest.skip(f"no {path}: run scripts/llamacpp-verify.sh build convert workaround")
    return path


def llama_server(model: Path, log: Path):
    port = free_port()
    cmd = [str(SERVER), "-m", str(model), "--reranking", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "-c", "2048", "-b", "2048", "-ub", "2048", "-np", "2", "-t", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "llama-server not ready\n" + log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def exact():
    scorer = build_scorer(parse_spec("dtype:fp32"), model=BUNDLED_MODEL, device="cpu")
    yield scorer
    scorer.close()


def compare(reference, tmp_path, kind: str) -> dict[str, dict]:
    """verify's numbers for llama-server serving ``model-KIND.gguf`` against ``reference``,
    through llama.cpp's own path (/v1/rerank) and its TEI-compatible one (/rerank, texts)."""
    proc, base = llama_server(gguf(kind), tmp_path / "llama-server.log")
    rows = {}
    try:
        for api, url in (("llamacpp", base), ("tei", f"{base}/rerank")):
            spec = parse_spec(f"{api}=url:{url},api:{api},scale:logit")  # llama.cpp: raw head
            service = build_scorer(spec, model=BUNDLED_MODEL)
            try:
                rows[api] = verify(groups(), reference, [service], concurrency=2).candidates[0]
            finally:
                service.close()
    finally:
        proc.terminate()
        proc.wait(30)
    for api, c in rows.items():
        assert c["failed_queries"] == 0 and c["queries"] == len(QUERIES), (api, c)
    assert rows["llamacpp"]["max_abs_diff"] == pytest.approx(rows["tei"]["max_abs_diff"], abs=1e-4)
    return rows


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_plain_conversion_disagrees(exact, tmp_path, kind):
    """llama.cpp's converter drops BERT's pooler (docs/verifying.md): verify shows the GGUF
    ranking unlike the checkpoint. If this fails, llama.cpp fixed it: update the doc."""
    for c in compare(exact, tmp_path, kind).values():
        assert c["spearman"] < 0.5 and c["max_abs_diff"] > 1.0, c


class SegmentlessBert:
    """The checkpoint as transformers runs it with every token_type_id 0: what llama.cpp's
    BERT graph computes (it adds token-type row 0 to every token). A Scorer for verify."""

    remote, scale, batch_size, name = False, "logit", None, "transformers-types-0"

    def __init__(self, model_dir: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).float().eval()

    def score(self, query, documents):
        enc = self.tok([query] * len(documents), list(documents), return_tensors="pt",
                       padding=True)  # fmt: skip
        enc["token_type_ids"] = self.torch.zeros_like(enc["token_type_ids"])
        with self.torch.no_grad():
            return self.model(**enc).logits[:, 0].tolist()

    def describe(self):
        return {"kind": "transformers, token_type_ids = 0"}

    def close(self):
        pass


@pytest.mark.parametrize(
    "kind, max_diff, min_spearman", [("pooler-f16", 0.05, 0.99), ("pooler-q8_0", 0.3, 0.97)]
)
def test_pooler_kept_is_segmentless_bert(tmp_path, kind, max_diff, min_spearman):
    """With the pooler kept under RoBERTa's head names (the script's workaround stage),
    llama.cpp computes the checkpoint's function, but for the segment ids: it equals
    transformers with every token_type_id 0, up to the GGUF's rounding."""
    pytest.importorskip("transformers")
    from crossrank.hub import resolve_model_dir

    rows = compare(SegmentlessBert(str(resolve_model_dir(BUNDLED_MODEL))), tmp_path, kind)
    for c in rows.values():
        assert c["max_abs_diff"] < max_diff and c["spearman"] >= min_spearman, c
        assert c["top1_agreement"] == 1.0, c
