"""Training data: group sampling rules, determinism, bad lines with line numbers."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from crossrank.errors import InputError
from crossrank.train.data import GroupSchedule, TrainExample, load_examples, sample_group


def example(n_pos=2, n_neg=10, scores=False):
    pos = tuple(f"pos {i}" for i in range(n_pos))
    neg = tuple(f"neg {i}" for i in range(n_neg))
    if scores:
        return TrainExample(
            "q",
            pos,
            neg,
            tuple(float(i) for i in range(n_pos)),
            tuple(-float(i) for i in range(n_neg)),
        )
    return TrainExample("q", pos, neg)


def test_group_is_one_positive_then_distinct_negatives():
    ex = example(n_pos=3, n_neg=10)
    firsts = set()
    for seed in range(40):
        g = sample_group(ex, 8, np.random.default_rng(seed))
        assert len(g.passages) == 8
        assert g.passages[0] in ex.pos
        assert all(p in ex.neg for p in g.passages[1:])
        assert len(set(g.passages[1:])) == 7  # without replacement
        firsts.add(g.passages[0])
    assert firsts == set(ex.pos)  # the positive is drawn at random


def test_short_negative_list_is_repeated_then_sampled():
    ex = example(n_pos=1, n_neg=3)
    for seed in range(10):
        g = sample_group(ex, 8, np.random.default_rng(seed))
        counts = Counter(g.passages[1:])
        assert sum(counts.values()) == 7 and set(counts) == set(ex.neg)
        assert max(counts.values()) <= 3  # the list is repeated ceil(7 / 3) = 3 times


def test_teacher_scores_follow_their_passages():
    ex = example(n_pos=2, n_neg=5, scores=True)
    g = sample_group(ex, 4, np.random.default_rng(3))
    assert g.teacher[0] == float(ex.pos.index(g.passages[0]))
    for p, s in zip(g.passages[1:], g.teacher[1:]):
        assert s == -float(ex.neg.index(p))


def test_schedule_is_deterministic_and_splits_global_batches_across_ranks():
    exs = [
        TrainExample(f"q{i}", (f"p{i}",), tuple(f"n{i}-{j}" for j in range(9))) for i in range(20)
    ]
    one = GroupSchedule(exs, group_size=4, batch_size=4, seed=7)
    again = GroupSchedule(exs, group_size=4, batch_size=4, seed=7)
    two = GroupSchedule(exs, group_size=4, batch_size=2, world=2, seed=7)
    accum = GroupSchedule(exs, group_size=4, batch_size=1, accum=2, world=2, seed=7)
    assert one.steps_per_epoch == 5
    for step in (0, 3, 5, 9):  # 5 and 9: second epoch, new order
        ref = one.micro_batch(step, 0)
        assert ref == again.micro_batch(step, 0)
        assert two.micro_batch(step, 0, 0) + two.micro_batch(step, 0, 1) == ref
        parts = [accum.micro_batch(step, m, r) for m in range(2) for r in range(2)]
        assert [g for p in parts for g in p] == ref
    epoch0 = {g.query for s in range(5) for g in one.micro_batch(s, 0)}
    assert len(epoch0) == 20  # an epoch visits every group once
    assert one.micro_batch(0, 0) != GroupSchedule(
        exs, group_size=4, batch_size=4, seed=8
    ).micro_batch(0, 0)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


GOOD = {"query": "q", "pos": ["p"], "neg": ["n1", "n2"]}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "invalid JSON"),
        ({"query": "q", "pos": [], "neg": ["n"]}, "no positive"),
        ({"query": "q", "neg": ["n"]}, "'pos'"),
        ({"pos": ["p"], "neg": ["n"]}, "'query'"),
        ({"query": "q", "pos": ["p"], "neg": [1, 2]}, "'neg'"),
        ({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]}, "neither"),
        (
            {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1], "neg_scores": []},
            "1 numbers",
        ),
        ({"query": "q", "pos": ["p"], "neg": []}, "no negatives"),
    ],
)
def test_bad_lines_are_reported_with_their_line_number(tmp_path, bad, message):
    path = write(tmp_path / "d.jsonl", [GOOD, "", bad, GOOD])
    with pytest.raises(InputError, match=rf"d\.jsonl:3: .*{message}"):
        load_examples(path, group_size=4)


def test_gzip_input_and_short_groups_are_counted(tmp_path, caplog):
    import gzip
    import logging

    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "neg": ["a"] * 9}) + "\n")
    with caplog.at_level(logging.INFO, logger="crossrank.train.data"):
        exs = load_examples(str(path), group_size=8)
    assert len(exs) == 2 and exs[1].lineno == 2
    assert "1 of 2 groups have fewer than 7 negatives" in caplog.text


def test_prompt_field_is_carried_into_groups_and_checked(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"query": "q1", "pos": ["p"], "neg": ["n1", "n2"], "prompt": "Is B about A?"},
        {"query": "q2", "pos": ["p"], "neg": ["n1", "n2"]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ex = load_examples(str(path), group_size=2)
    assert [e.prompt for e in ex] == ["Is B about A?", None]
    rng = np.random.default_rng(0)
    assert sample_group(ex[0], 2, rng).prompt == "Is B about A?"
    assert sample_group(ex[1], 2, rng).prompt is None
    path.write_text(json.dumps({**rows[1], "prompt": 3}) + "\n")
    with pytest.raises(InputError, match=r"p.jsonl:1: 'prompt' must be a string"):
        load_examples(str(path), group_size=2)
