"""Training runs on tiny checkpoints: loss goes down, checkpoints load in our Reranker and in
transformers with the same scores, resume, DDP equivalence, atomic saves, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossrank.testing import TOPICS, write_groups
from crossrank.train.trainer import TrainConfig, train

PAIRS = [(f"what is {t}?", text) for t, _ in TOPICS[:4] for _, text in TOPICS[:4]]


def scores(model_dir: Path) -> list[float]:
    from crossrank import Reranker

    return Reranker(model_dir, device="cpu").compute_score(PAIRS)


def cfg(tmp_path: Path, model: Path, data: str, out: str, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        data=data,
        output=str(tmp_path / out),
        group_size=4,
        batch_size=4,
        lr=1e-3,
        max_steps=6,
        warmup_ratio=0.0,
        logging_steps=1,
        show_progress=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def group_ce(model_dir: Path) -> float:
    """Mean cross-entropy of each query's positive against all other topics (the objective)."""
    from crossrank import Reranker

    pairs = [(f"what is {t}?", text) for t, _ in TOPICS for _, text in TOPICS]
    s = torch.tensor(Reranker(model_dir, device="cpu").compute_score(pairs)).view(8, 8)
    return float(torch.nn.functional.cross_entropy(s, torch.arange(8)))


def test_training_reduces_the_loss_and_logs_every_step(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    before = group_ce(bert_dir)
    summary = train(cfg(tmp_path, bert_dir, data, "out", max_steps=12, dropout=0.0))
    after = group_ce(tmp_path / "out")
    assert after < before - 0.2, (before, after)
    log = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert all(r["pairs_per_s"] > 0 and 0 <= r["padding"] < 1 for r in steps)
    assert steps[0]["lr"] > steps[-1]["lr"] == 0.0  # linear decay to zero
    assert summary["pairs"] == 12 * 4 * 4


def test_checkpoint_loads_in_reranker_and_transformers_with_the_same_scores(tmp_path, xlmr_dir):
    from oracle import reference_scores

    data = write_groups(tmp_path / "d.jsonl")
    train(cfg(tmp_path, xlmr_dir, data, "out", max_steps=2))
    out = tmp_path / "out"
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["XLMRobertaForSequenceClassification"]
    assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    ours, ref = scores(out), reference_scores(out, PAIRS)
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-5
    assert ours != scores(xlmr_dir)  # training changed the model


def test_bare_bert_gets_a_head_and_round_trips_through_transformers(tmp_path):
    from crossrank.testing import bert_checkpoint
    from oracle import reference_scores

    bare = bert_checkpoint(tmp_path / "bare", bare=True, seed=3)
    data = write_groups(tmp_path / "d.jsonl")
    train(cfg(tmp_path, bare, data, "out", max_steps=2, save_dtype="fp16"))
    out = tmp_path / "out"
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["BertForSequenceClassification"]
    ours, ref = scores(out), reference_scores(out, PAIRS)
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-4


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    # dropout stays on: the RNG state must be restored too
    train(
        cfg(tmp_path, bert_dir, data, "full", max_steps=6, save_steps=3, grad_accum=2, batch_size=2)
    )
    part = cfg(
        tmp_path, bert_dir, data, "part", max_steps=6, save_steps=3, grad_accum=2, batch_size=2
    )
    train(part)
    out = tmp_path / "part"
    # interrupt after step 3: drop everything the run wrote later, plus a half-written save
    for name in ("model.safetensors", "config.json"):
        (out / name).unlink()
    (out / ".tmp-checkpoint-5-999").mkdir()
    (out / ".tmp-checkpoint-5-999" / "model.safetensors").write_bytes(b"partial")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    part.resume = True
    summary = train(part)
    assert summary["start_step"] == 3
    a, b = scores(tmp_path / "full"), scores(out)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    steps = [json.loads(x).get("step") for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps.count(4) == 1  # the log continues after the resume point


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, bert_dir, monkeypatch):
    import crossrank.models.weights as weights
    from crossrank.models import load_cross_encoder
    from crossrank.train.checkpoint import find_last_checkpoint, save_model

    model = load_cross_encoder(bert_dir)
    from crossrank.config import EncoderConfig

    config = EncoderConfig.from_file(bert_dir / "config.json")
    dest = tmp_path / "ckpt"
    save_model(model, config, bert_dir, dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    def crash(state, path):
        path.with_name(path.name + ".tmp").write_bytes(b"half")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(weights, "save_safetensors", crash)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, config, bert_dir, dest)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dir left behind
    assert find_last_checkpoint(tmp_path) is None  # temp / non-checkpoint dirs are ignored


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "crossrank", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_bad_data_exits_2_with_the_line_number(tmp_path, bert_dir):
    data = tmp_path / "bad.jsonl"
    good = json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]})
    data.write_text(
        good + "\n" + good + "\n" + json.dumps({"query": "q", "pos": [], "neg": ["n"]}) + "\n"
    )
    res = run_cli(
        "train", "--model", str(bert_dir), "--data", str(data), "--output", str(tmp_path / "o")
    )
    assert res.returncode == 2, res.stderr
    assert "bad.jsonl:3:" in res.stderr and "positive" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("train", "--model", str(bert_dir), "--data", str(tmp_path / "missing.jsonl"))
    assert res.returncode == 2 and "missing.jsonl" in res.stderr


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, bert_dir):
    data = write_groups(tmp_path / "d.jsonl")
    # a modest lr: Adam turns rounding noise in near-zero gradients into lr-sized updates
    common = [
        "train", "--model", str(bert_dir), "--data", data, "--group-size", "4",
        "--lr", "1e-4", "--max-steps", "3", "--warmup-ratio", "0", "--dropout", "0",
        "--device", "cpu", "--no-progress", "--logging-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = run_cli(*common, "--batch-size", "4", "--output", str(tmp_path / "one"), env=env)
    assert one.returncode == 0, one.stderr
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "crossrank", *common, "--batch-size", "2", "--output", str(tmp_path / "two"),
    ]  # fmt: skip
    two = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = scores(tmp_path / "one"), scores(tmp_path / "two")
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    assert a != scores(bert_dir)
    log = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]  # only rank 0 logs
    shutil.rmtree(tmp_path / "two")


@pytest.mark.parametrize("qmax,pmax", [(32, 64), (8, 16), (4, 40)])
def test_training_pairs_follow_the_reference_length_rules(minilm_dir, qmax, pmax):
    """FlagEmbedding's encoder training data, written with transformers' tokenizer: query cut
    to q + p // 4, passage to p + q // 2, the pair cut on the passage side to q + p tokens.
    (With transformers 5, FlagEmbedding decodes the cut ids and tokenizes the text pair.)"""
    from transformers import AutoTokenizer

    from crossrank.config import EncoderConfig, read_config
    from crossrank.engine.tokenize import load_tokenizer
    from crossrank.families.base import ScoreOptions
    from crossrank.families.encoder import FAMILY
    from crossrank.train.data import Group

    model_dir = minilm_dir
    config = EncoderConfig.from_dict(read_config(model_dir / "config.json"))
    long_text = " ".join(text for _, text in TOPICS) * 3
    groups = [
        Group("what is a panda?", tuple(text for _, text in TOPICS[:3]) + (long_text,)),
        Group(long_text, (TOPICS[1][1], long_text)),
    ]
    cfg = TrainConfig(
        model=str(model_dir), data="-", query_max_length=qmax, passage_max_length=pmax
    )
    inference = FAMILY.pair_tokenizer(
        load_tokenizer(model_dir), config, ScoreOptions(cfg.max_length)
    )
    encoder = inference.training(cfg.query_max_length, cfg.passage_max_length)
    tok = AutoTokenizer.from_pretrained(model_dir)
    expected = []
    for g in groups:
        q = tok.encode(
            g.query, truncation=True, max_length=qmax + pmax // 4, add_special_tokens=False
        )
        for p in g.passages:
            d = tok.encode(
                p, truncation=True, max_length=pmax + qmax // 2, add_special_tokens=False
            )
            expected.append(
                tok(
                    _decode(tok, q),
                    _decode(tok, d),
                    truncation="only_second",
                    max_length=qmax + pmax,
                )
            )
    got = encoder.encode([(g.query, p) for g in groups for p in g.passages])
    assert [e.ids for e in got] == [x["input_ids"] for x in expected]
    assert max(len(e) for e in got) == qmax + pmax  # the long texts really were cut
    assert [e.type_ids for e in got] == [x["token_type_ids"] for x in expected]


def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.mark.isa
def test_bf16_autocast_on_cpu_trains_like_fp32(tmp_path, bert_dir, monkeypatch):
    """--dtype bf16 on CPU: the matrix products run in bf16, weights and state stay fp32; the
    first step's loss is fp32's to bf16 precision and training still lowers the loss. The CPU
    flags are faked so the test runs on any CPU (without bf16 units torch emulates them)."""
    from safetensors.torch import load_file

    import crossrank.cpu

    monkeypatch.setattr(crossrank.cpu, "cpu_features", lambda: frozenset({"avx512_bf16"}))
    data = write_groups(tmp_path / "d.jsonl")
    before = group_ce(bert_dir)
    train(cfg(tmp_path, bert_dir, data, "fp32", max_steps=12, dropout=0.0))
    train(cfg(tmp_path, bert_dir, data, "bf16", max_steps=12, dropout=0.0, dtype="bf16"))

    def losses(out: str) -> list[float]:
        log = (tmp_path / out / "train_log.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, log) if "loss" in r]

    fp32, bf16 = losses("fp32"), losses("bf16")
    assert abs(fp32[0] - bf16[0]) < 0.02 * abs(fp32[0]), (fp32[0], bf16[0])
    assert fp32[0] != bf16[0]  # the products did run in bf16
    assert group_ce(tmp_path / "bf16") < before - 0.2
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
