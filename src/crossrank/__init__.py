"""crossrank: exact and fast cross-encoder reranking.

Example:
    >>> from crossrank import Reranker
    >>> rr = Reranker("BAAI/bge-reranker-v2-m3")  # doctest: +SKIP
    >>> rr.rank("what is panda?", ["hi", "The giant panda is a bear."])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossrank._version import __version__

if TYPE_CHECKING:
    from crossrank.options import ChunkSpec, Options
    from crossrank.reranker import RankResult, Reranker

__all__ = ["ChunkSpec", "Options", "RankResult", "Reranker", "__version__"]


def __getattr__(name: str) -> Any:
    # torch is imported on first use, not when the package is imported
    if name in ("Reranker", "RankResult"):
        from crossrank import reranker

        return getattr(reranker, name)
    if name in ("ChunkSpec", "Options"):
        from crossrank import options

        return getattr(options, name)
    raise AttributeError(f"module 'crossrank' has no attribute {name!r}")
