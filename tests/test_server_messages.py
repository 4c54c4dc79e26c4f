"""Validation errors in the user's field names, in every API dialect's body shape, from a real
``crossrank serve``: ``documents[0]: must be a string or ...``, never pydantic's names of
union members and validators (``documents.0.function-after[valid_unicode(), ...]``)."""

from __future__ import annotations

import re

import httpx
import pytest

pytest.importorskip("fastapi")

from server_helpers import assert_error_shape, serving  # noqa: E402

INTERNALS = re.compile(
    r"function-after|constrained-str|list\[|DocumentText|DocumentObject|Input should|"
    r"Value error|Field required|\.\d"
)


@pytest.fixture(scope="module")
def base(bert_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("messages") / "serve.log"
    with serving(bert_dir, log, "--max-input-chars", "40") as served:
        yield served.base


def message(path: str, body: dict) -> str:
    if path in ("/score", "vllm"):
        return body["error"]["message"]
    return body["error"] if path == "/rerank" else body["message"]


@pytest.mark.parametrize(
    "path,body,expected",
    [
        ("/v2/rerank", '{"query": "q", "documents": [{"id": 1}]}', "documents[0].text: required"),
        (
            "/v2/rerank",
            '{"query": "q", "documents": ["a", 1]}',
            "documents[1]: must be a string or an object with a string text field",
        ),
        ("/v2/rerank", '{"query": "q", "documents": [{"text": 1}]}', "documents[0].text: must be a string"),
        (
            "/v1/rerank",
            '{"query": "q", "documents": [1]}',
            "documents[0]: must be a string or an object (ranked by its text field or the "
            "rank_fields)",
        ),
        ("/v1/rerank", '{"query": "q", "documents": ["' + "a" * 41 + '"]}', "documents[0]: at most 40 characters"),
        ("/v1/rerank", '{"query": "q", "documents": ["a"], "top_n": 0}', "top_n: must be >= 1"),
        ("/rerank", '{"query": "q", "texts": [null]}', "texts[0]: must be a string"),
        ("/rerank", '{"query": "\\ud800", "texts": ["a"]}', "query: not valid Unicode"),
        ("/rerank", "[]", "request body: must be an object"),
        ("/score", '{"text_1": 1, "text_2": ["a"]}', "text_1: must be a string or a list of strings"),
        ("vllm", '{"query": "q", "documents": [{"id": 1}]}', "documents[0]: must be a string"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_users_fields(base, path, body, expected):
    url = base + ("/rerank" if path == "vllm" else path)
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422, r.text
    assert_error_shape(path, r.json())
    said = message(path, r.json())
    assert said == expected
    assert not INTERNALS.search(said), said
