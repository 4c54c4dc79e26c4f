"""Input rules of the LLM rerankers, as FlagEmbedding's FlagLLMReranker and
LayerWiseFlagLLMReranker build them.

For a pair (query, passage):

1. ``"A: " + query`` and ``"B: " + passage`` are tokenized without special tokens; the query
   is cut to ``query_max_length`` tokens (default ``max_length * 3 // 4``), the passage to
   ``max_length``.
2. First part: ``[bos] + query`` (the gemma reranker adds bos only when the tokenizer has one
   that differs from its pad token; the layerwise reranker always adds it).
   Second part: ``sep + passage`` where ``sep`` is the tokens of ``"\\n"``.
3. The pair is cut on the second part only (from its end) to
   ``max_length + len(sep) + len(prompt)`` tokens; that budget counts the sep and prompt that
   follow, a quirk kept as is. If the second part is too short to absorb the excess, nothing
   is cut (as transformers' ``only_second`` truncation does).
4. ``sep + prompt`` is appended. The score is the logit of the first token of ``"Yes"`` at
   the last position.

Every pair of one query starts with the same tokens, ``[bos] + query + sep``:
:attr:`EncodedPair.prefix_len` says how many, so the engine can share their keys/values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from crossrank.engine.tokenize import EncodedPair, encode_distinct, split_pairs
from crossrank.errors import InputError, ModelLoadError

DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)
SEPARATOR = "\n"


def special_token_id(tok: Tokenizer, model_dir: str | Path, name: str) -> int | None:
    """Id of the tokenizer's ``bos_token`` / ``pad_token`` ... as transformers' tokenizer sees
    it (from tokenizer_config.json, then special_tokens_map.json); None when not set."""
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        path = Path(model_dir) / fname
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get(name)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return tok.token_to_id(value)
    return None


class LLMPairTokenizer:
    """Builds LLM reranker inputs exactly as FlagEmbedding does (see the module docstring).

    Args:
        tokenizer: the checkpoint's ``tokenizer.json`` (truncation and padding off).
        bos_id / pad_id: the tokenizer's bos and pad token ids (None when it has none).
        always_bos: add bos even when it equals the pad id (the layerwise reranker's rule).
        prompt: the instruction put after the pair (default :data:`DEFAULT_PROMPT`).

    Example:
        >>> lt = LLMPairTokenizer(tok, bos_id=2, pad_id=0)  # doctest: +SKIP
        >>> lt.encode([("what is panda?", "The giant panda is a bear.")])  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        bos_id: int | None,
        pad_id: int | None,
        always_bos: bool = False,
        max_length: int = 512,
        query_max_length: int | None = None,
        prompt: str | None = None,
        query_instruction: str = "A: ",
        passage_instruction: str = "B: ",
        instruction_format: str = "{}{}",
        passage_max_length: int | None = None,
        template_in_budget: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        if always_bos and bos_id is None:
            raise ModelLoadError("this reranker needs a bos token but the tokenizer has none")
        self.add_bos = always_bos or (bos_id is not None and bos_id != pad_id)
        self.bos_id = bos_id
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.prompt = DEFAULT_PROMPT if prompt is None else prompt
        self.query_instruction = query_instruction
        self.passage_instruction = passage_instruction
        self.instruction_format = instruction_format
        #: the passage's cut (None: max_length)
        self.passage_max_length = passage_max_length
        #: max_length bounds the whole input, separators and prompt included (the reference's
        #: training rule), rather than the pair before them (its inference rule, step 3)
        self.template_in_budget = template_in_budget
        self.sep_ids = self._ids(SEPARATOR)
        self.prompt_ids = self._ids(self.prompt)
        yes = self._ids("Yes")
        if not yes:
            raise ModelLoadError("the tokenizer produces no token for 'Yes'")
        #: the score is the logit of this token at the last position
        self.yes_id = yes[0]

    def with_prompt(self, prompt: str) -> LLMPairTokenizer:
        """A copy of this tokenizer that puts ``prompt`` after the pair."""
        new = copy.copy(self)
        new.prompt = prompt
        new.prompt_ids = self._ids(prompt)
        return new

    def training(self, query_max_length: int, passage_max_length: int) -> LLMPairTokenizer:
        """These rules with FlagEmbedding's LLM fine-tuning budgets (``q`` / ``p``): the query
        cut to ``q + p // 4`` tokens, the passage to ``p + q // 2``, and the whole input,
        separators and prompt included, to ``q + p`` (cut on the passage side)."""
        q, p = query_max_length, passage_max_length
        new = copy.copy(self)
        new.max_length, new.query_max_length = q + p, q + p // 4
        new.passage_max_length, new.template_in_budget = p + q // 2, True
        return new

    def _budget(self, max_length: int) -> int:
        """Most tokens of ``[bos] query sep passage`` (the pair before ``sep prompt``)."""
        tail = len(self.sep_ids) + len(self.prompt_ids)
        return max_length - tail if self.template_in_budget else max_length + tail

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def texts(self, pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
        """Queries and passages with their ``A: `` / ``B: `` prefixes."""
        return split_pairs(
            pairs, self.query_instruction, self.passage_instruction, self.instruction_format
        )

    @property
    def num_special(self) -> int:
        """Tokens added around the query and the passage: bos, separator, separator + prompt."""
        return int(self.add_bos) + 2 * len(self.sep_ids) + len(self.prompt_ids)

    def limits(
        self, max_length: int | None = None, query_max_length: int | None = None
    ) -> tuple[int, int]:
        """``(max_length, query_max_length)`` for one call, with the defaults applied."""
        max_length = max_length or self.max_length
        if max_length < 1:
            raise InputError(f"max_length must be positive, got {max_length}")
        return max_length, query_max_length or self.query_max_length or max_length * 3 // 4

    def passage_budget(self, query: Encoding, max_length: int, qmax: int) -> int:
        """Most passage tokens :meth:`assemble` keeps beside ``query`` (the reference's cut,
        quirks included: see the module docstring)."""
        first = int(self.add_bos) + min(len(query), qmax)
        cut = self.passage_max_length or max_length
        excess = first + len(self.sep_ids) + cut - self._budget(max_length)  # of a long passage
        if 0 < excess < len(self.sep_ids) + cut:
            return cut - excess
        return cut

    def assemble(
        self, query: Encoding, passage: Encoding, max_length: int, qmax: int
    ) -> EncodedPair:
        """One model input: ``[bos] query sep passage sep prompt``, cut as the reference does."""
        head = [self.bos_id] if self.add_bos else []
        first = head + query.ids[:qmax]
        second = self.sep_ids + passage.ids[: self.passage_max_length or max_length]
        excess = len(first) + len(second) - self._budget(max_length)
        if 0 < excess < len(second):
            second = second[:-excess]
        kept_sep = second[: len(self.sep_ids)] == self.sep_ids
        prefix = len(first) + (len(self.sep_ids) if kept_sep else 0)
        return EncodedPair(first + second + self.sep_ids + self.prompt_ids, None, prefix)

    def encode(
        self,
        pairs: Sequence[Sequence[str]],
        *,
        max_length: int | None = None,
        query_max_length: int | None = None,
    ) -> list[EncodedPair]:
        """Encode pairs (input order kept); each distinct query is tokenized once."""
        max_length, qmax = self.limits(max_length, query_max_length)
        queries, passages = self.texts(pairs)
        q_encs = encode_distinct(self.tokenizer, queries)
        p_encs = self.tokenizer.encode_batch(passages, add_special_tokens=False)
        return [self.assemble(q_encs[q], p, max_length, qmax) for q, p in zip(queries, p_encs)]
