"""The options of the reranking service, shared by :func:`create_app` and ``crossrank serve``."""

from __future__ import annotations

from dataclasses import dataclass, field

from crossrank.errors import CrossrankError


@dataclass
class ServerSettings:
    """Everything the service can be told; every field is a ``crossrank serve`` flag.

    Model options (``model``, ``device``, ``dtype``, ``max_length``, ``batch_size``) are used
    only when :func:`~crossrank.server.app.create_app` loads the model itself.

    Example:
        >>> ServerSettings(model="BAAI/bge-reranker-v2-m3", max_wait_ms=2).max_wait_ms
        2.0
    """

    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_length: int = 512
    batch_size: int | None = None
    #: name reported in responses and /info (default: the model argument)
    served_model_name: str | None = None
    #: padded-token budget of one forward pass (default: the engine's, 8192 CPU / 65536 CUDA)
    max_batch_tokens: int | None = None
    #: longest a pair waits for a batch to fill
    max_wait_ms: float = 5.0
    #: queued pairs beyond which new requests get 429 (admission is per request)
    max_queued_pairs: int = 10000
    #: most documents in one request (the server splits them into batches itself)
    max_client_batch_size: int = 1000
    #: longest query or document, in characters
    max_input_chars: int = 100_000
    #: largest request body, in bytes
    payload_limit: int = 2_000_000
    #: bearer token required on every route but /health, /docs and /openapi.json
    api_key: str | None = field(default=None, repr=False)
    #: chunk long documents on every route (not only when a request asks for it)
    chunking: bool = False
    #: most chunks per document (the default and the cap of a request's max_chunks_per_doc)
    max_chunks_per_doc: int = 10
    #: tokens shared by consecutive chunks
    chunk_overlap: int = 32
    #: threads that tokenize requests off the event loop
    tokenizer_workers: int = 2
    #: score a few pairs at start-up before /health reports ready
    warmup: bool = True

    def __post_init__(self) -> None:
        self.max_wait_ms = float(self.max_wait_ms)
        positive = (
            "max_length",
            "max_queued_pairs",
            "max_client_batch_size",
            "max_input_chars",
            "payload_limit",
            "max_chunks_per_doc",
            "tokenizer_workers",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise CrossrankError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_batch_tokens", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CrossrankError(f"{name} must be positive, got {value}")
        if self.max_wait_ms < 0:
            raise CrossrankError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.chunk_overlap < 0:
            raise CrossrankError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")
        if self.api_key == "":
            self.api_key = None
