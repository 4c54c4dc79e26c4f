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
query: :attr:`EncodedLLMPair.prefix_len` says how many, so the engine can share their keys and
values (:mod:`crossrank.engine.llm_backend`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from tokenizers import Tokenizer

from crossrank.engine.llm_tokenize import EncodedLLMPair
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
    """Builds Qwen3-Reranker inputs exactly as its authors do (see the module docstring).

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

    @property
    def template_length(self) -> int:
        """Tokens of the template around the middle text (prefix + suffix)."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    def with_instruction(self, instruction: str) -> Qwen3PairTokenizer:
        """A copy of this tokenizer that puts ``instruction`` in the ``<Instruct>`` field."""
        new = copy.copy(self)
        new.instruction = instruction
        return new

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode(
        self, pairs: Sequence[Sequence[str]], *, max_length: int | None = None
    ) -> list[EncodedLLMPair]:
        """Encode ``(query, document)`` pairs (input order kept)."""
        max_length = max_length or self.max_length
        budget = max_length - self.template_length
        if budget < 1:
            raise InputError(
                f"max_length {max_length} leaves no room for text: the Qwen3-Reranker template "
                f"alone is {self.template_length} tokens"
            )
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise InputError(f"each pair must be [query, document] strings, got {pair!r}")
        queries = list(dict.fromkeys(q for q, _ in pairs))
        # the tokens every pair of a query starts with (up to and including the query)
        heads = {
            q: self.prefix_ids + enc.ids
            for q, enc in zip(
                queries,
                self.tokenizer.encode_batch(
                    [f"<Instruct>: {self.instruction}\n<Query>: {q}\n" for q in queries],
                    add_special_tokens=False,
                ),
            )
        }
        middles = self.tokenizer.encode_batch(
            [middle_text(self.instruction, q, d) for q, d in pairs], add_special_tokens=False
        )
        out = []
        for (q, _), enc in zip(pairs, middles):
            ids = self.prefix_ids + enc.ids[:budget] + self.suffix_ids
            prefix = min(_common_prefix(heads[q], ids), len(ids) - 1)
            out.append(EncodedLLMPair(ids, None, prefix))
        return out
