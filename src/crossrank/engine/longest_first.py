"""Pair truncation as transformers' tokenizers do it by default (``truncation=True``, the
"longest_first" strategy), the input rule of ModernBERT cross-encoders' reference code
(their model cards, sentence-transformers' CrossEncoder).

The budget is ``max_length`` minus the pair template's special tokens. When the pair is too
long, the tokenizers library shortens the longer side to fit beside the shorter one; when even
that is not enough (the shorter side exceeds half the budget) both get half, the longer side the
odd token. Query and passage are cut from their ends.
"""

from __future__ import annotations

from tokenizers import Encoding

from crossrank.engine.tokenize import EncodedPair, PairTokenizer, _truncated


def longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Lengths the tokenizers library keeps of a pair of ``n1`` and ``n2`` tokens."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long = (n2, n1) if swap else (n1, n2)
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short = budget // 2
        long = short + budget % 2
    return (long, short) if swap else (short, long)


class LongestFirstPairTokenizer(PairTokenizer):
    """:class:`~crossrank.engine.tokenize.PairTokenizer` with "longest_first" truncation:
    no query limit of its own (``query_max_length``, when given, still cuts the query first).

    Example:
        >>> pt = LongestFirstPairTokenizer(tok, max_length=512)  # doctest: +SKIP
        >>> pt.encode([("what is a panda?", "The giant panda is a bear.")])  # doctest: +SKIP
    """

    def limits(
        self, max_length: int | None = None, query_max_length: int | None = None
    ) -> tuple[int, int]:
        """``(max_length, query limit)``: the query limit is the whole budget unless given."""
        max_length, _ = super().limits(max_length, None)
        budget = max_length - self.num_special
        qmax = query_max_length or self.query_max_length or budget
        return max_length, min(qmax, budget)

    def passage_budget(self, query: Encoding, max_length: int, qmax: int) -> int:
        """Most passage tokens kept beside ``query`` (a passage longer than any budget)."""
        budget = max_length - self.num_special
        n1 = min(len(query), qmax)
        return longest_first(n1, budget + 1, budget)[1]

    def assemble(self, q: Encoding, p: Encoding, max_length: int, qmax: int) -> EncodedPair:
        """Cut the query to ``qmax``, then both sides "longest first", then add the template."""
        q = q if len(q) <= qmax else _truncated(q, qmax)
        n1, n2 = longest_first(len(q), len(p), max_length - self.num_special)
        q = q if len(q) <= n1 else _truncated(q, n1)
        p = p if len(p) <= n2 else _truncated(p, n2)
        pair = self.tokenizer.post_process(q, p, add_special_tokens=True)
        return EncodedPair(pair.ids, pair.type_ids if self.use_type_ids else None)
