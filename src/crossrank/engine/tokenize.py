"""Pair tokenization with the reference's input rules (FlagEmbedding's FlagReranker).

1. Query and passage are tokenized separately, without special tokens.
2. The query is cut to ``query_max_length`` tokens (default ``max_length * 3 // 4``).
3. The pair is assembled with the tokenizer's own pair template (``[CLS] A [SEP] B [SEP]``,
   ``<s> A </s></s> B </s>``, ...) and cut on the passage side only, to ``max_length`` tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from crossrank.errors import InputError, ModelLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one assembled (query, passage) pair, special tokens included.

    ``prefix_len``: how many leading ids depend only on the query (LLM rerankers: their keys
    and values are shared by all pairs of one query); None for encoders.
    """

    ids: Sequence[int]  # a list, or a compact numpy array (the server keeps int32 arrays)
    type_ids: Sequence[int] | None = None
    prefix_len: int | None = None

    def __len__(self) -> int:
        return len(self.ids)


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` with its stored truncation and padding switched off."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{Path(model_dir)} has no tokenizer.json (a fast tokenizer file is required)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception on bad files
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


def pad_token_id(tok: Tokenizer, model_dir: str | Path, default: int) -> int:
    """The tokenizer's pad id (from its padding config or the usual pad token names)."""
    for name in ("<pad>", "[PAD]", "<|pad|>"):
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return token_id
    return default


class PairTokenizer:
    """Turns ``(query, passage)`` pairs into model inputs exactly as the reference does.

    Example:
        >>> pt = PairTokenizer(tok, max_length=512)  # doctest: +SKIP
        >>> pt.encode([("what is a panda?", "The giant panda is a bear.")])  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_length: int = 512,
        query_max_length: int | None = None,
        query_instruction: str | None = None,
        passage_instruction: str | None = None,
        instruction_format: str = "{}{}",
        use_type_ids: bool = False,
        passage_max_length: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.query_max_length = query_max_length
        #: most passage tokens of a pair (None: what the pair's budget leaves)
        self.passage_max_length = passage_max_length
        self.query_instruction = query_instruction
        self.passage_instruction = passage_instruction
        self.instruction_format = instruction_format
        self.use_type_ids = use_type_ids
        self.num_special = tokenizer.num_special_tokens_to_add(is_pair=True)

    def limits(
        self, max_length: int | None = None, query_max_length: int | None = None
    ) -> tuple[int, int]:
        """``(max_length, query_max_length)`` for one call, with the defaults applied."""
        max_length = max_length or self.max_length
        if max_length <= self.num_special:
            raise InputError(
                f"max_length {max_length} leaves no room for text "
                f"({self.num_special} special tokens)"
            )
        qmax = query_max_length or self.query_max_length or max_length * 3 // 4
        # a query longer than the whole budget would leave a negative passage budget
        return max_length, min(qmax, max_length - self.num_special)

    def passage_budget(self, query: Encoding, max_length: int, qmax: int) -> int:
        """Most passage tokens that fit beside ``query`` (cut to ``qmax``) in a pair."""
        budget = max(max_length - self.num_special - min(len(query), qmax), 0)
        return budget if self.passage_max_length is None else min(budget, self.passage_max_length)

    def training(self, query_max_length: int, passage_max_length: int) -> PairTokenizer:
        """These rules with FlagEmbedding's encoder fine-tuning budgets (``q`` / ``p``): the
        query cut to ``q + p // 4`` tokens, the passage to ``p + q // 2``, the pair (special
        tokens included) to ``q + p`` and at most ``max_length``, on the passage side; a short
        query leaves its unused budget to the passage. Always these rules (a subclass's
        truncation rule is not carried over: ModernBERT is fine-tuned with them too)."""
        q, p = query_max_length, passage_max_length
        max_length, _ = self.limits(min(self.max_length, q + p))  # room for text
        return PairTokenizer(
            self.tokenizer,
            max_length=max_length,
            query_max_length=min(q + p // 4, max_length - self.num_special),
            query_instruction=self.query_instruction,
            passage_instruction=self.passage_instruction,
            instruction_format=self.instruction_format,
            use_type_ids=self.use_type_ids,
            passage_max_length=p + q // 2,
        )

    def texts(self, pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
        """Queries and passages with the optional instructions prepended."""
        return split_pairs(
            pairs, self.query_instruction, self.passage_instruction, self.instruction_format
        )

    def encode(
        self,
        pairs: Sequence[Sequence[str]],
        *,
        max_length: int | None = None,
        query_max_length: int | None = None,
    ) -> list[EncodedPair]:
        """Encode pairs (input order kept)."""
        max_length, qmax = self.limits(max_length, query_max_length)
        queries, passages = self.texts(pairs)
        distinct = encode_distinct(self.tokenizer, queries)
        q_encs = [distinct[q] for q in queries]
        p_encs = self.tokenizer.encode_batch(passages, add_special_tokens=False)
        out = []
        for q_enc, p_enc in zip(q_encs, p_encs):
            out.append(self.assemble(q_enc, p_enc, max_length, qmax))
        return out

    def assemble(self, q: Encoding, p: Encoding, max_length: int, qmax: int) -> EncodedPair:
        """Cut the query, build the pair with special tokens, cut the passage to fit."""
        q_enc = q if len(q) <= qmax else _truncated(q, qmax)
        budget = self.passage_budget(q_enc, max_length, qmax)
        p_enc = p if len(p) <= budget else _truncated(p, budget)
        # post_process applies the tokenizer's pair template (special tokens and type ids)
        pair = self.tokenizer.post_process(q_enc, p_enc, add_special_tokens=True)
        return EncodedPair(pair.ids, pair.type_ids if self.use_type_ids else None)


def encode_distinct(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, Encoding]:
    """Each distinct text of ``texts`` tokenized once, without special tokens (queries repeat
    across pairs): ``{text: encoding}``, in first-seen order."""
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, tokenizer.encode_batch(unique, add_special_tokens=False)))


def split_pairs(
    pairs: Sequence[Sequence[str]],
    query_instruction: str | None = None,
    passage_instruction: str | None = None,
    instruction_format: str = "{}{}",
) -> tuple[list[str], list[str]]:
    """Check ``[query, passage]`` pairs and split them into queries and passages.

    An instruction, when given, is put before each text through ``instruction_format``
    (``"{}{}"``: instruction then text), as FlagEmbedding does.
    """
    queries, passages = [], []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2:
            raise InputError(f"pair {i} is not a [query, passage] pair: {pair!r:.80}")
        q, p = pair
        if not isinstance(q, str) or not isinstance(p, str):
            raise InputError(f"pair {i}: query and passage must be strings")
        if query_instruction is not None:
            q = instruction_format.format(query_instruction, q)
        if passage_instruction is not None:
            p = instruction_format.format(passage_instruction, p)
        queries.append(q)
        passages.append(p)
    return queries, passages


def _truncated(enc: Encoding, n: int) -> Encoding:
    """A copy of ``enc`` keeping its first ``n`` tokens."""
    copy = Encoding.merge([enc], growing_offsets=False)
    copy.truncate(n)
    return copy
