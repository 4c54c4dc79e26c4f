"""The OpenAPI schema states what the server enforces: ``schemathesis run --checks all``
against a real ``crossrank serve`` (uvicorn on 127.0.0.1, a tiny model, an API key) finds
nothing. The limits are small so that valid bodies at the limits stay quick to score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")

from server_helpers import serving  # noqa: E402

KEY = "schema-key"
SERVING = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def documented_config() -> str:
    """The schemathesis.toml that docs/serving.md gives: the test runs what the docs say."""
    text = SERVING.read_text()
    found = re.search(r"```toml\n\s*# schemathesis.toml\n(.*?)```", text, re.S)
    assert found, "docs/serving.md gives no schemathesis.toml"
    return "\n".join(line.strip() for line in found.group(1).splitlines()) + "\n"


def test_schemathesis_finds_nothing(bert_dir, tmp_path):
    args = ["--max-length", "64", "--max-client-batch-size", "8", "--max-input-chars", "200"]
    # bodies at the field limits can be over the body limit, as 2 MB is with the defaults
    args += ["--payload-limit", "1200"]
    with serving(bert_dir, tmp_path / "serve.log", *args, env={"CROSSRANK_API_KEY": KEY}) as srv:
        exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert exe is not None
        # what JSON Schema cannot state is declared expected there: the body limit's 413,
        # vLLM's 400 for text_1 and text_2 lists of different lengths
        config = tmp_path / "schemathesis.toml"
        config.write_text(documented_config())
        cmd = [exe, "--config-file", str(config), "run", f"{srv.base}/openapi.json"]
        cmd += ["--checks", "all"]
        cmd += ["-H", f"Authorization: Bearer {KEY}", "--max-examples", "15"]
        cmd += ["--generation-deterministic", "--no-color"]
        # run in tmp_path: schemathesis keeps a cache directory in its working directory
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
        assert "No issues found" in p.stdout or "passed" in p.stdout, p.stdout[-3000:]
        log = srv.text()
    assert "Traceback" not in log, log[-4000:]


def test_schema_states_the_limits(bert_dir):
    """What the schema says, field by field (the numbers come from the settings)."""
    from crossrank.reranker import Reranker
    from crossrank.server.app import create_app
    from crossrank.server.settings import ServerSettings

    rr = Reranker(bert_dir, device="cpu", max_length=64)
    settings = ServerSettings(max_client_batch_size=7, max_input_chars=99, api_key="k")
    spec = create_app(rr, settings).openapi()
    schemas = spec["components"]["schemas"]
    tei = schemas["TEIRerankRequest"]["properties"]
    assert tei["query"]["minLength"] == 1 and tei["query"]["maxLength"] == 99
    assert tei["texts"]["minItems"] == 1 and tei["texts"]["maxItems"] == 7
    assert tei["texts"]["items"]["maxLength"] == 99
    v1 = schemas["V1RerankRequest"]["properties"]
    assert v1["documents"]["maxItems"] == 7
    assert {"type": "integer", "minimum": 1} in v1["top_n"]["anyOf"]
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the server's --api-key",
    }
    for path in ("/info", "/metrics", "/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score"):
        (op,) = spec["paths"][path].values()
        assert op["security"] == [{"bearer": []}] and "401" in op["responses"], path
    assert "security" not in spec["paths"]["/health"]["get"]
    assert set(spec["paths"]["/v1/rerank"]["post"]["responses"]) >= {"400", "413", "422", "429"}
    # no API key: no security scheme, no 401
    open_spec = create_app(rr, ServerSettings()).openapi()
    assert "securitySchemes" not in open_spec.get("components", {})
    assert "401" not in open_spec["paths"]["/info"]["get"]["responses"]
