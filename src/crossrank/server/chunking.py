"""The server's view of long-document handling: the engine's chunking (one implementation for
the library, the CLI and the server)."""

from crossrank.engine.chunking import (
    ChunkSpec,
    EncodedRequest,
    TooLongError,
    best_per_document,
    encode_request,
    windows,
)

__all__ = [
    "ChunkSpec",
    "EncodedRequest",
    "TooLongError",
    "best_per_document",
    "encode_request",
    "windows",
]
