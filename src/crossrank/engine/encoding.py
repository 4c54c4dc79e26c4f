"""The pair-encoding seam: what the engine, chunking, training and the server need from a
model family's input rules.

Every family's pair tokenizer (:class:`~crossrank.engine.tokenize.PairTokenizer` for encoders,
:class:`~crossrank.engine.llm_tokenize.LLMPairTokenizer` for the bge LLM rerankers, ...)
implements :class:`PairEncoding`. Long-document chunking (:mod:`crossrank.engine.chunking`)
uses only these members: it tokenizes the query and the passages, asks how many passage tokens
fit beside the query, cuts the passage into windows of that size and assembles each window
with the query exactly as :meth:`PairEncoding.encode` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tokenizers import Encoding, Tokenizer

from crossrank.engine.tokenize import EncodedPair


@runtime_checkable
class PairEncoding(Protocol):
    """A family's input rules: ``(query, passage)`` pairs -> :class:`EncodedPair` objects."""

    #: the checkpoint's tokenizer (truncation and padding off)
    tokenizer: Tokenizer
    #: default longest pair in tokens
    max_length: int

    @property
    def num_special(self) -> int:
        """Tokens a pair adds around its query and passage (special tokens, template, prompt)."""
        ...

    def limits(
        self, max_length: int | None = None, query_max_length: int | None = None
    ) -> tuple[int, int]:
        """``(max_length, query_max_length)`` of one call, defaults applied and checked."""
        ...

    def texts(self, pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
        """Check the pairs and split them into query and passage texts (instructions added)."""
        ...

    def passage_budget(self, query: Encoding, max_length: int, qmax: int) -> int:
        """Most passage tokens :meth:`assemble` keeps beside ``query``."""
        ...

    def assemble(
        self, query: Encoding, passage: Encoding, max_length: int, qmax: int
    ) -> EncodedPair:
        """One model input from a tokenized query and passage (window), cut by the rules."""
        ...

    def training(self, query_max_length: int, passage_max_length: int) -> PairEncoding:
        """These input rules with the family's fine-tuning length budgets (``crossrank train``'s
        ``--query-max-length`` / ``--passage-max-length``): what training encodes with."""
        ...

    def encode(
        self,
        pairs: Sequence[Sequence[str]],
        *,
        max_length: int | None = None,
        query_max_length: int | None = None,
    ) -> list[EncodedPair]:
        """Encode pairs in input order (``prefix_len`` set where the family shares prefixes)."""
        ...
