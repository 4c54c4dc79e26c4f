"""``crossrank serve``: an HTTP reranking service speaking the TEI, Cohere and Jina APIs.

Needs the ``server`` extra (``pip install 'crossrank[server]'``). The pieces:

- :mod:`~crossrank.server.settings`: every option, defined once (flags, environment, /info).
- :mod:`~crossrank.server.errors`: the one table from error type to HTTP status.
- :mod:`~crossrank.server.apis`: one module per API (TEI, Cohere v1 / Jina, Cohere v2, the
  service routes), each with its request / response bodies.
- :mod:`~crossrank.server.service`: what the routes share (model, scheduler, the rerank call).
- :mod:`~crossrank.server.scheduler`: the one scheduler that owns the model and batches pairs
  across requests under a token budget, with admission by expected wait.
- :mod:`~crossrank.server.guard`: request ids, errors, access log, API key, body limit.
- :mod:`~crossrank.server.openapi`: the schema's security and middleware responses.
- :mod:`~crossrank.server.metrics`: Prometheus metrics (one registry per app).
- :mod:`~crossrank.server.app`: the FastAPI application factory :func:`create_app`.
- :mod:`~crossrank.server.cli`: the ``crossrank serve`` subcommand (uvicorn).

Long documents are chunked by the engine (:mod:`crossrank.engine.chunking`).

Example:
    >>> from crossrank.server.app import create_app  # doctest: +SKIP
    >>> from crossrank.server.settings import ServerSettings  # doctest: +SKIP
    >>> app = create_app(ServerSettings(model="BAAI/bge-reranker-v2-m3"))  # doctest: +SKIP
"""
