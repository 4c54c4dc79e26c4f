"""Input template of Qwen3-Reranker, as its authors build it (model card ``process_inputs``).

For a pair (query, document) and an instruction:

1. ``prefix`` = ``<|im_start|>system\\n{SYSTEM}<|im_end|>\\n<|im_start|>user\\n`` and
   ``suffix`` = ``<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`` are
   tokenized once, without special tokens added.
2. The middle text ``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}`` is
   tokenized on its own and cut from its end to ``max_length - len(prefix) - len(suffix)``
   tokens: the document goes first; only when it is used up do the query's last tokens go
   (the authors' rule). The template (prefix and suffix) is never cut.
3. The input is ``prefix + middle + suffix``; the score is ``logit("yes") - logit("no")`` at
   the last position (``sigmoid`` of it is the authors' P(yes)).

Every pair of one query (and instruction) starts with the same tokens, up to and including the
query and the ``<Document>:`` marker: :attr:`EncodedPair.prefix_len` says how many, so the
engine can share their keys and values (:mod:`crossrank.engine.llm_backend`).

Long-document chunking (:mod:`crossrank.engine.chunking`) sees the query side as
``<Instruct>: ...\\n<Query>: {query}\\n<Document>:`` and the passage as ``" " + document``,
tokenized apart; that split falls on a pre-tokenizer boundary, so for ordinary text the first
window gives :meth:`Qwen3PairTokenizer.encode`'s ids.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from tokenizers import Encoding, Tokenizer

from crossrank.engine.tokenize import EncodedPair, encode_distinct
from crossrank.errors import InputError, ModelLoadError

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
#: the authors' default ``max_length``
DEFAULT_MAX_LENGTH = 8192


def middle_text(instruction: str, query: str, document: str) -> str:
    """The user turn's content for one pair."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Qwen3PairTokenizer:
    """Builds Qwen3-Reranker inputs exactly as its authors do (see the module docstring);
    a :class:`~crossrank.engine.encoding.PairEncoding`.

    Args:
        tokenizer: the checkpoint's ``tokenizer.json`` (truncation and padding off).
        max_length: longest input in tokens, template included (authors' default 8192).
        instruction: the ``<Instruct>`` text (default :data:`DEFAULT_INSTRUCTION`).

    Example:
        >>> qt = Qwen3PairTokenizer(tok, instruction="Find the Debian manual page")  # doctest: +SKIP
        >>> qt.encode([("apt pinning", "Pinning lets you choose package versions ...")])  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        instruction: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        for token in ("<|im_start|>", "<|im_end|>"):
            if tokenizer.token_to_id(token) is None:
                raise ModelLoadError(f"the tokenizer has no {token} token: not a Qwen3 tokenizer")
        self.prefix_ids = self._ids(PREFIX)
        self.suffix_ids = self._ids(SUFFIX)
        yes, no = tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")
        if yes is None or no is None:
            raise ModelLoadError("the tokenizer has no 'yes' / 'no' token")
        #: the score is ``logit(yes_id) - logit(no_id)`` at the last position
        self.yes_id: int = yes
        self.no_id: int = no
        self.instruction_tokens = self._instruction_tokens()

    def _instruction_tokens(self) -> int:
        """Tokens of the middle text without query and document: the instruction and the
        ``<Instruct>`` / ``<Query>`` / ``<Document>`` markers."""
        return len(self._ids(middle_text(self.instruction, "", "")))

    @property
    def num_special(self) -> int:
        """Tokens of the template around the middle text (prefix + suffix)."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    def with_instruction(self, instruction: str) -> Qwen3PairTokenizer:
        """A copy of this tokenizer that puts ``instruction`` in the ``<Instruct>`` field."""
        new = copy.copy(self)
        new.instruction = instruction
        new.instruction_tokens = new._instruction_tokens()
        return new

    def training(self, query_max_length: int, passage_max_length: int) -> Qwen3PairTokenizer:
        """This template with the fine-tuning budget: the whole input cut to
        ``query_max_length + passage_max_length`` tokens, the document first."""
        new = copy.copy(self)
        new.max_length = query_max_length + passage_max_length
        new.limits()  # the template must leave room for text
        return new

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def limits(
        self, max_length: int | None = None, query_max_length: int | None = None
    ) -> tuple[int, int]:
        """``(max_length, query side limit)``; the template has no query limit of its own, so
        the second is the room left beside the template."""
        max_length = max_length or self.max_length
        budget = max_length - self.num_special
        if budget < 1:
            raise InputError(
                f"max_length {max_length} leaves no room for text: the Qwen3-Reranker template "
                f"alone is {self.num_special} tokens"
            )
        if self.instruction_tokens >= budget:
            # the cut from the end would leave neither query nor document: every pair the
            # same input, the same score
            raise InputError(
                f"the instruction takes {self.instruction_tokens} tokens with its <Instruct>, "
                f"<Query> and <Document> markers, which leaves no room for the query and "
                f"document within max_length {max_length} (the template is {self.num_special} "
                "more): shorten the instruction or raise max_length"
            )
        if query_max_length is not None:
            raise InputError(
                "Qwen3-Reranker has no query_max_length: max_length cuts the document first"
            )
        return max_length, budget

    def texts(self, pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
        """Query sides (``<Instruct>: ...\\n<Query>: {query}\\n<Document>:``) and passages
        (``" " + document``) of the pairs."""
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise InputError(f"each pair must be [query, document] strings, got {pair!r}")
        queries = [f"<Instruct>: {self.instruction}\n<Query>: {q}\n<Document>:" for q, _ in pairs]
        return queries, [" " + d for _, d in pairs]

    def passage_budget(self, query: Encoding, max_length: int, qmax: int) -> int:
        """Most document tokens :meth:`assemble` keeps beside ``query``."""
        return max(0, max_length - self.num_special - len(query))

    def assemble(
        self, query: Encoding, passage: Encoding, max_length: int, qmax: int
    ) -> EncodedPair:
        """One input from a tokenized query side and document (window), cut as the authors
        cut the middle text: from its end."""
        budget = max_length - self.num_special
        middle = (list(query.ids) + list(passage.ids))[:budget]
        prefix = len(self.prefix_ids) + min(len(query), budget)
        ids = self.prefix_ids + middle + self.suffix_ids
        return EncodedPair(ids, None, min(prefix, len(ids) - 1))

    def encode(
        self,
        pairs: Sequence[Sequence[str]],
        *,
        max_length: int | None = None,
        query_max_length: int | None = None,
    ) -> list[EncodedPair]:
        """Encode ``(query, document)`` pairs (input order kept), the middle text tokenized
        whole as the authors do."""
        max_length, budget = self.limits(max_length, query_max_length)
        query_sides, _ = self.texts(pairs)
        # the tokens every pair of a query starts with (up to its <Document>: marker)
        heads = {
            q: self.prefix_ids + enc.ids
            for q, enc in encode_distinct(self.tokenizer, query_sides).items()
        }
        middles = self.tokenizer.encode_batch(
            [middle_text(self.instruction, q, d) for q, d in pairs], add_special_tokens=False
        )
        out = []
        for side, enc in zip(query_sides, middles):
            ids = self.prefix_ids + enc.ids[:budget] + self.suffix_ids
            prefix = min(_common_prefix(heads[side], ids), len(ids) - 1)
            out.append(EncodedPair(ids, None, prefix))
        return out
