"""A schemathesis run against the service's own OpenAPI spec: no input produces a 5xx."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from crossrank.reranker import Reranker  # noqa: E402
from crossrank.server.app import create_app  # noqa: E402
from crossrank.server.settings import ServerSettings  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(bert_dir):
    rr = Reranker(bert_dir, device="cpu", max_length=64)
    settings_ = ServerSettings(max_wait_ms=1, max_client_batch_size=64, max_input_chars=4000)
    app = create_app(rr, settings_)
    with TestClient(app) as client:  # runs the lifespan: the model is loaded and warmed up
        for _ in range(500):
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.01)
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def check(case, response) -> None:
    assert response.status_code < 500, (case.path, case.body, response.text[:300])
    if 400 <= response.status_code < 500:
        body = response.json()
        if case.path.startswith(("/v1/", "/v2/")):
            assert set(body) == {"message"}, body
        else:
            assert set(body) == {"error", "error_type"}, body


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(api_schema, mode):
    """Bounded examples per operation, valid (positive) and invalid (negative) inputs."""
    # (schemathesis' own pytest loader does not run on pytest 9: its strategies are used here)
    from hypothesis import given

    generation_mode = schemathesis.GenerationMode(mode)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/rerank", "/v1/rerank", "/v2/rerank", "/health"}
    seen: list[tuple[str, int]] = []
    for op in operations:
        if mode == "negative" and op.method.upper() == "GET":
            continue  # no parameters: nothing invalid to generate

        @given(case=op.as_strategy(generation_mode=generation_mode))
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call()
            seen.append((case.path, response.status_code))
            check(case, response)

        run()
    codes = {(path, code) for path, code in seen}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        assert (path, 200 if mode == "positive" else 422) in codes, codes
