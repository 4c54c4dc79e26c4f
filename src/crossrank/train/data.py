"""Training data: JSON-lines groups ``{"query", "pos", "neg", "prompt"?, "pos_scores"?,
"neg_scores"?}`` (``prompt``: the LLM rerankers' instruction for this example).

A training group is one positive drawn at random plus ``group_size - 1`` negatives drawn
without replacement (the negative list is repeated when it is shorter than needed), the
reference's rule. Every draw comes from a generator seeded by ``(seed, epoch, group index)``,
so the data of any step is known from the step number alone (what ``--resume`` relies on,
and what makes runs on several processes see the same global batches as one process).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossrank.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    """One line of the training file."""

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    pos_scores: tuple[float, ...] | None = None
    neg_scores: tuple[float, ...] | None = None
    lineno: int = 0
    prompt: str | None = None


@dataclass(frozen=True)
class Group:
    """A sampled group: the positive first, then the negatives; teacher scores if given."""

    query: str
    passages: tuple[str, ...]
    teacher: tuple[float, ...] | None = None
    prompt: str | None = None


def _texts(obj: dict, field: str, where: str, required: bool) -> tuple[str, ...]:
    value = obj.get(field)
    if value is None and not required:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError(f"{where}: {field!r} must be a list of strings")
    return tuple(value)


def _scores(obj: dict, field: str, n: int, where: str) -> tuple[float, ...] | None:
    value = obj.get(field)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    ):
        raise InputError(f"{where}: {field!r} must be a list of {n} numbers (one per passage)")
    return tuple(float(x) for x in value)


def parse_example(obj: dict, where: str, lineno: int = 0) -> TrainExample:
    """Validate one JSON object; raises :class:`InputError` naming ``where`` (file:line)."""
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"{where}: missing or empty string field 'query'")
    pos = _texts(obj, "pos", where, required=True)
    if not pos:
        raise InputError(f"{where}: the group has no positive passage ('pos' is empty)")
    neg = _texts(obj, "neg", where, required=False)
    pos_scores = _scores(obj, "pos_scores", len(pos), where)
    neg_scores = _scores(obj, "neg_scores", len(neg), where)
    if (pos_scores is None) != (neg_scores is None):
        raise InputError(f"{where}: give both 'pos_scores' and 'neg_scores', or neither")
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"{where}: 'prompt' must be a string")
    return TrainExample(query, pos, neg, pos_scores, neg_scores, lineno, prompt)


def load_examples(path: str, group_size: int) -> list[TrainExample]:
    """Read and validate every line of a JSON-lines (optionally .gz) training file.

    Errors name the file and line. Groups with fewer negatives than ``group_size - 1`` are
    kept (their negatives are repeated) and counted in the log.
    """
    from crossrank.files import read_jsonl

    examples: list[TrainExample] = []
    try:
        for lineno, obj in read_jsonl(path):
            examples.append(parse_example(obj, f"{path}:{lineno}", lineno))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    if not examples:
        raise InputError(f"{path}: no training groups")
    need = group_size - 1
    if need > 0:
        empty = [e.lineno for e in examples if not e.neg]
        if empty:
            raise InputError(
                f"{path}:{empty[0]}: the group has no negatives but --group-size is "
                f"{group_size} ({len(empty)} such lines)"
            )
        short = sum(1 for e in examples if len(e.neg) < need)
        if short:
            logger.info(
                "%d of %d groups have fewer than %d negatives; their negatives are repeated",
                short,
                len(examples),
                need,
            )
    with_scores = sum(1 for e in examples if e.pos_scores is not None)
    if 0 < with_scores < len(examples):
        raise InputError(
            f"{path}: {with_scores} of {len(examples)} lines have teacher scores; "
            "give them on every line or on none"
        )
    logger.info("loaded %d training groups from %s", len(examples), path)
    return examples


def sample_group(example: TrainExample, group_size: int, rng: np.random.Generator) -> Group:
    """One positive at random + ``group_size - 1`` negatives without replacement.

    When there are fewer negatives than needed, the list is repeated ``ceil(need / n)`` times
    and the negatives are drawn from the repeated list, as the reference does.
    """
    pi = int(rng.integers(len(example.pos)))
    need = group_size - 1
    neg_idx: list[int] = []
    if need > 0:
        n = len(example.neg)
        if n >= need:
            neg_idx = [int(i) for i in rng.choice(n, size=need, replace=False)]
        else:
            reps = -(-need // n)
            pool = list(range(n)) * reps
            neg_idx = [pool[int(i)] for i in rng.choice(len(pool), size=need, replace=False)]
    passages = (example.pos[pi], *(example.neg[i] for i in neg_idx))
    teacher = None
    if example.pos_scores is not None and example.neg_scores is not None:
        teacher = (example.pos_scores[pi], *(example.neg_scores[i] for i in neg_idx))
    return Group(example.query, passages, teacher, example.prompt)


class GroupSchedule:
    """Which groups each optimizer step uses, computed from the step number.

    Each epoch visits the examples in a permutation seeded by ``(seed, epoch)``; a step takes
    the next ``global_batch`` of them (a last partial batch is dropped and counted in the log).
    Rank ``r`` of ``world`` processes, micro-step ``a`` of ``accum``, gets its own slice.
    """

    def __init__(
        self,
        examples: Sequence[TrainExample],
        *,
        group_size: int,
        batch_size: int,
        accum: int = 1,
        world: int = 1,
        seed: int = 42,
    ) -> None:
        self.examples = examples
        self.group_size = group_size
        self.batch_size = batch_size
        self.accum = accum
        self.world = world
        self.seed = seed
        self.global_batch = batch_size * accum * world
        self.steps_per_epoch = len(examples) // self.global_batch
        if self.steps_per_epoch == 0:
            raise InputError(
                f"{len(examples)} training groups are fewer than one step needs "
                f"({self.global_batch} = batch size x grad accum x processes)"
            )
        dropped = len(examples) - self.steps_per_epoch * self.global_batch
        if dropped:
            logger.info("each epoch drops the last %d groups (a partial step)", dropped)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def micro_batch(self, step: int, micro: int, rank: int = 0) -> list[Group]:
        """The groups of micro-step ``micro`` of optimizer step ``step`` on process ``rank``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        start = k * self.global_batch + (micro * self.world + rank) * self.batch_size
        groups = []
        for idx in order[start : start + self.batch_size]:
            rng = np.random.default_rng([self.seed, epoch, int(idx)])
            groups.append(sample_group(self.examples[int(idx)], self.group_size, rng))
        return groups
