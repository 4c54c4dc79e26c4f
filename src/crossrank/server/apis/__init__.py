"""One module per API the service speaks; each builds its router from the settings.

- :mod:`.tei`: Hugging Face text-embeddings-inference, ``POST /rerank``.
- :mod:`.v1`: Cohere v1 and Jina (Jina's API has Cohere v1's path and request shape),
  ``POST /v1/rerank``.
- :mod:`.cohere_v2`: Cohere v2, ``POST /v2/rerank``.
- :mod:`.vllm`: vLLM, ``POST /score``, ``/v1/score``, and its body on ``/rerank`` (a
  :class:`~.common.SharedRoute` in front of TEI's route).
- :mod:`.service`: ``GET /health``, ``/info``, ``/metrics``.

A module exposes ``PATHS`` (the paths whose errors take its body shape), ``error_body(message,
error_type, status)`` and ``router(service) -> APIRouter``. Its request bodies carry the limits the
service enforces (lengths, counts, strict types), so the OpenAPI schema states them.
"""
