"""``crossrank train``'s options are derived from TrainConfig's fields: one definition."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from crossrank.train.config import TrainConfig, add_arguments, from_args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p, TrainConfig)
    return p


def test_every_field_is_an_option_with_its_default_and_help():
    args = parser().parse_args(["-m", "M", "--data", "D"])
    cfg = from_args(args, TrainConfig)
    assert cfg == TrainConfig(model="M", data="D")
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"


def test_options_parse_to_typed_fields():
    args = parser().parse_args(
        ["--model", "M", "--data", "D", "--group-size", "16", "--lr", "2e-4", "--no-progress",
         "--max-steps", "7", "--gradient-checkpointing", "--loss", "distill", "-o", "out"]
    )  # fmt: skip
    cfg = from_args(args, TrainConfig)
    assert (cfg.group_size, cfg.lr, cfg.max_steps, cfg.output) == (16, 2e-4, 7, "out")
    assert cfg.show_progress is False and cfg.gradient_checkpointing is True
    assert cfg.loss == "distill"


def test_required_options_are_required():
    with pytest.raises(SystemExit):
        parser().parse_args(["--data", "D"])


def test_paths_given_as_pathlib_serialise_as_strings(tmp_path):
    import json

    cfg = TrainConfig(model=tmp_path / "m", data=tmp_path / "d.jsonl", output=tmp_path / "o")
    d = json.loads(json.dumps(cfg.as_dict()))
    assert d["model"] == str(tmp_path / "m") and d["output"] == str(tmp_path / "o")
