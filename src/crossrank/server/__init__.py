"""``crossrank serve``: an HTTP reranking service speaking the TEI, Cohere and Jina APIs.

Needs the ``server`` extra (``pip install 'crossrank[server]'``). The pieces:

- :mod:`~crossrank.server.settings`: the service's options (one dataclass, shared by the CLI).
- :mod:`~crossrank.server.protocol`: request / response schemas of each API.
- :mod:`~crossrank.server.scheduler`: the one scheduler that owns the model and batches pairs
  across requests under a token budget.
- :mod:`~crossrank.server.chunking`: overlapping token windows for long documents.
- :mod:`~crossrank.server.metrics`: Prometheus metrics (one registry per app).
- :mod:`~crossrank.server.app`: the FastAPI application factory :func:`create_app`.
- :mod:`~crossrank.server.cli`: the ``crossrank serve`` subcommand (uvicorn).

Example:
    >>> from crossrank.server.app import create_app  # doctest: +SKIP
    >>> from crossrank.server.settings import ServerSettings  # doctest: +SKIP
    >>> app = create_app(ServerSettings(model="BAAI/bge-reranker-v2-m3"))  # doctest: +SKIP
"""
