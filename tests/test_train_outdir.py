"""Training directories: nothing overwritten or mixed without being asked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crossrank.errors import CrossrankError
from crossrank.testing import write_groups
from crossrank.train.trainer import train
from test_train_trainer import cfg


def test_a_foreign_non_empty_output_is_refused_unless_overwrite(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CrossrankError, match="not empty.*--overwrite-output-dir"):
        train(cfg(tmp_path, bert_dir, data, "out", max_steps=1))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=1, overwrite_output_dir=True))
    assert (out / "notes.txt").read_text() == "mine"  # other files kept
    assert (out / "model.safetensors").is_file() and (out / "run_config.json").is_file()


def test_an_earlier_run_needs_resume_or_a_new_output(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=2, save_steps=1))
    with pytest.raises(CrossrankError, match="--resume.*new --output"):
        train(cfg(tmp_path, bert_dir, data, "out", max_steps=2))
    # --overwrite-output-dir starts over: the old run's checkpoints and log are gone
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=1, overwrite_output_dir=True))
    out = tmp_path / "out"
    assert not list(out.glob("checkpoint-*"))
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1]


def test_resume_with_changed_options_lists_them_and_needs_allow(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=4, save_steps=2))
    changed = cfg(tmp_path, bert_dir, data, "out", max_steps=6, save_steps=2, lr=5e-4)
    changed.resume = True
    with pytest.raises(CrossrankError, match=r"lr 0.001 -> 0.0005; max_steps 4 -> 6"):
        train(changed)
    changed.allow_config_change = True
    assert train(changed)["start_step"] == 2
    same = cfg(tmp_path, bert_dir, data, "out", max_steps=6, save_steps=2, lr=5e-4, resume=True)
    assert train(same)["start_step"] == 4  # the newest checkpoint has these options


def test_resume_of_a_run_without_checkpoints_is_refused(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=1))
    with pytest.raises(CrossrankError, match="no checkpoint"):
        train(cfg(tmp_path, bert_dir, data, "out", max_steps=1, resume=True))


def test_stale_temporaries_are_removed_at_start(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=2, save_steps=1))
    out = tmp_path / "out"
    (out / ".tmp-checkpoint-2-4242").mkdir()
    (out / ".tmp-checkpoint-2-4242" / "model.safetensors").write_bytes(b"x" * 100)
    (out / ".tmp-final-4242").mkdir()
    train(cfg(tmp_path, bert_dir, data, "out", max_steps=2, save_steps=1, resume=True))
    assert not list(out.glob(".tmp-*"))


def test_cli_refuses_model_dir_as_output_in_one_line(tmp_path, bert_dir):
    model = tmp_path / "model"
    import shutil

    shutil.copytree(bert_dir, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    data = write_groups(tmp_path / "d.jsonl")
    res = subprocess.run(
        [sys.executable, "-m", "crossrank", "train", "-m", str(model), "--data", data,
         "--output", str(model) + "/", "--overwrite-output-dir", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "initial model" in res.stderr
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_a_run_that_fails_before_training_leaves_no_output(tmp_path, bert_dir):
    from crossrank.errors import InputError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "pos": [], "neg": ["n"]}) + "\n")
    with pytest.raises(InputError):
        train(cfg(tmp_path, bert_dir, str(bad), "out"))
    assert not (tmp_path / "out").exists()  # so the next attempt is not refused as a run
