"""Training the LLM rerankers: the reference's inputs, loss and gradients (transformers'
Gemma as the oracle), the layerwise loss, LoRA adapters that PEFT reads, exact resume,
memory rules (frozen base in its dtype, optimizer state only for trained tensors)."""

from __future__ import annotations

import json

import pytest
import torch

from crossrank.testing import TOPICS, write_groups
from crossrank.train.trainer import TrainConfig, Trainer, train
from oracle import PROMPT, hf_llm_tokenizer

LONG = " ".join(text for _, text in TOPICS) * 2


def dcfg(tmp_path, model, data, out, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        data=data,
        output=str(tmp_path / out),
        group_size=4,
        batch_size=2,
        lr=1e-3,
        max_steps=3,
        warmup_ratio=0.0,
        logging_steps=1,
        show_progress=False,
        device="cpu",
        query_max_length=16,
        passage_max_length=32,
    )
    base.update(kw)
    return TrainConfig(**base)


def groups():
    from crossrank.train.data import Group

    return [
        Group("what is a panda?", (TOPICS[0][1], TOPICS[1][1], LONG, TOPICS[3][1])),
        Group(LONG, (TOPICS[2][1], LONG, TOPICS[4][1], TOPICS[5][1]), prompt="Is B about A?"),
    ]


def reference_ids(tok, query, passage, prompt, qmax, pmax):
    """FlagEmbedding's AbsLLMRerankerTrainDataset rule, written with transformers' tokenizer."""
    enc = lambda text, **kw: tok(text, add_special_tokens=False, **kw)["input_ids"]  # noqa: E731
    q = enc("A: " + query, truncation=True, max_length=qmax + pmax // 4)
    p = enc("B: " + passage, truncation=True, max_length=pmax + qmax // 2)
    sep, pr = enc("\n"), enc(prompt)
    first, second = [tok.bos_token_id, *q], sep + p
    excess = len(first) + len(second) - (qmax + pmax - len(pr) - len(sep))
    if excess > 0 and len(second) > excess:
        second = second[: len(second) - excess]
    return first + second + sep + pr


def test_gemma_step_has_the_reference_inputs_loss_and_gradients(tmp_path, gemma_dir):
    """One step of FlagEmbedding's decoder_only.base loss (group cross-entropy over the "Yes"
    logit at the last token) computed with transformers' Gemma, against our task."""
    from transformers import GemmaForCausalLM

    from crossrank.train.encoding import make_chunks
    from crossrank.train.losses import make_loss, task_loss
    from crossrank.train.trainer import make_task

    qmax, pmax = 8, 64
    cfg = dcfg(tmp_path, gemma_dir, "-", "o", query_max_length=qmax, passage_max_length=pmax)
    task = make_task(gemma_dir, gemma_dir, cfg, torch.device("cpu"))
    tok = hf_llm_tokenizer(gemma_dir)
    yes = tok("Yes", add_special_tokens=False)["input_ids"][-1]
    expected = [
        reference_ids(tok, g.query, p, g.prompt or PROMPT, qmax, pmax)
        for g in groups()
        for p in g.passages
    ]
    encoded = task.encode(groups())
    assert [e.ids for e in encoded] == expected
    assert max(map(len, expected)) == qmax + pmax  # the long texts were cut

    ref = GemmaForCausalLM.from_pretrained(gemma_dir, torch_dtype=torch.float32).eval()
    logits = torch.stack(
        [ref(input_ids=torch.tensor([ids])).logits[0, -1, yes] for ids in expected]
    )
    ref_loss = torch.nn.functional.cross_entropy(
        logits.view(2, 4), torch.zeros(2, dtype=torch.long)
    )
    ref_loss.backward()

    chunks, inverse, _, _ = make_chunks(encoded, task.pad_id, 4096, torch.device("cpu"))
    scores = torch.cat([task.scores(task.model, *c) for c in chunks])[inverse].view(2, 4, -1)
    loss = task_loss(scores, None, make_loss("ce"), task.self_distill)
    loss.backward()
    assert abs(loss.item() - ref_loss.item()) < 1e-5
    ours, theirs = dict(task.model.named_parameters()), dict(ref.named_parameters())
    for name in (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.norm.weight",
    ):
        a, b = ours[name].grad, theirs[name].grad
        assert ((a - b).norm() / b.norm()).item() < 1e-4, name


def test_layerwise_loss_is_the_reference_formula():
    """CE summed over layers + self-distillation of earlier layers to the last (no teacher);
    with teacher scores, distillation of every layer towards the teacher instead."""
    from crossrank.families.minicpm import FAMILY
    from crossrank.train.losses import make_loss, task_loss

    torch.manual_seed(0)
    s = torch.randn(2, 4, 3)  # [batch, group, layers]
    teacher = torch.randn(2, 4)
    assert FAMILY.self_distill
    ce = torch.nn.functional.cross_entropy
    target = torch.zeros(2, dtype=torch.long)

    def kd(student, t):
        return -torch.mean(torch.sum(torch.log_softmax(student, -1) * torch.softmax(t, -1), -1))

    want = sum(ce(s[..., k], target) for k in range(3))
    want = want + sum(kd(s[..., k], s[..., 2]) for k in range(2))
    assert abs(task_loss(s, None, make_loss("ce"), True).item() - want.item()) < 1e-6
    want_t = sum(ce(s[..., k], target) + kd(s[..., k], teacher) for k in range(3))
    assert abs(task_loss(s, teacher, make_loss("ce"), True).item() - want_t.item()) < 1e-6


def test_gemma_lora_adapter_loads_in_peft_with_the_same_scores(tmp_path, gemma_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import GemmaForCausalLM

    from crossrank.families import load_decoder
    from crossrank.models.adapters import adapter_base, apply_adapter

    data = write_groups(tmp_path / "d.jsonl")
    train(dcfg(tmp_path, gemma_dir, data, "out", lora_rank=4, lora_alpha=8.0, lr=1e-2))
    out = tmp_path / "out"
    conf = json.loads((out / "adapter_config.json").read_text())
    assert (conf["peft_type"], conf["r"], conf["lora_alpha"]) == ("LORA", 4, 8.0)
    assert adapter_base(out) == str(gemma_dir.resolve())
    names = set(load_file(str(out / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
    assert len(names) == 2 * 4 * 2  # A and B of q/k/v/o in 2 layers

    tok = hf_llm_tokenizer(gemma_dir)
    ids = [reference_ids(tok, g.query, p, PROMPT, 16, 32) for g in groups() for p in g.passages]
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    base = GemmaForCausalLM.from_pretrained(gemma_dir, torch_dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        ref = [peft_model(input_ids=torch.tensor([x])).logits[0, -1, yes].item() for x in ids]
        model = apply_adapter(load_decoder(gemma_dir), out)
        ours = [
            model.score(
                torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long), token_ids=[yes]
            ).item()
            for x in ids
        ]
        plain = [
            load_decoder(gemma_dir)
            .score(torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long), token_ids=[yes])
            .item()
            for x in ids
        ]
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-4
    assert max(abs(a - b) for a, b in zip(ours, plain)) > 1e-3  # the adapter changed the scores


def test_an_adapter_trained_by_peft_scores_the_same_through_crossrank(tmp_path, gemma_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import GemmaForCausalLM

    from crossrank.families import load_decoder
    from crossrank.models.adapters import adapter_base, apply_adapter, is_adapter_dir

    torch.manual_seed(1)
    base = GemmaForCausalLM.from_pretrained(gemma_dir, torch_dtype=torch.float32)
    lcfg = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False, task_type="CAUSAL_LM",
    )  # fmt: skip
    model = get_peft_model(base, lcfg).eval()
    model.save_pretrained(str(tmp_path / "ad"))
    assert is_adapter_dir(tmp_path / "ad")
    tok = hf_llm_tokenizer(gemma_dir)
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    ids = [reference_ids(tok, g.query, p, PROMPT, 16, 32) for g in groups() for p in g.passages]
    ours_model = apply_adapter(load_decoder(gemma_dir), tmp_path / "ad")
    with torch.no_grad():
        ref = [model(input_ids=torch.tensor([x])).logits[0, -1, yes].item() for x in ids]
        ours = [
            ours_model.score(
                torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long), token_ids=[yes]
            ).item()
            for x in ids
        ]
        plain = [
            load_decoder(gemma_dir)
            .score(torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long), token_ids=[yes])
            .item()
            for x in ids
        ]
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-4
    assert max(abs(a - b) for a, b in zip(ours, plain)) > 1e-3
    assert adapter_base(tmp_path / "ad") == str(gemma_dir)  # peft records its base


def test_lora_run_resumes_exactly(tmp_path, gemma_dir):
    from safetensors.torch import load_file

    data = write_groups(tmp_path / "d.jsonl")
    kw = dict(lora_rank=4, lora_dropout=0.2, max_steps=4, save_steps=2, grad_accum=2, batch_size=2)
    train(dcfg(tmp_path, gemma_dir, data, "full", **kw))
    part = dcfg(tmp_path, gemma_dir, data, "part", **kw)
    train(part)
    out = tmp_path / "part"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (out / name).unlink()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    part.resume = True
    assert train(part)["start_step"] == 2
    a = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 0  # B trained


def test_lora_keeps_the_base_frozen_in_its_dtype_and_states_for_trained_only(tmp_path, gemma_dir):
    data = write_groups(tmp_path / "d.jsonl")
    t = Trainer(dcfg(tmp_path, gemma_dir, data, "o", lora_rank=4, dtype="bf16", max_steps=1))
    trained = [p for p in t.task.model.parameters() if p.requires_grad]
    frozen = [p for p in t.task.model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen) and frozen
    assert all(p.dtype == torch.float32 for p in trained) and len(trained) == 16
    t.train()
    state = t.optimizer.state
    assert len(state) == len(trained) and all(p in state for p in trained)
    assert all(s["exp_avg"].dtype == torch.float32 for s in state.values())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path, minicpm_dir):
    from crossrank.train.encoding import make_chunks
    from crossrank.train.losses import make_loss, task_loss
    from crossrank.train.trainer import make_task

    grads = []
    for ckpt in (False, True):
        cfg = dcfg(tmp_path, minicpm_dir, "-", "o", gradient_checkpointing=ckpt, lora_rank=4,
                   lora_dropout=0.0, lora_extra_parameters=["linear_head"])  # fmt: skip
        torch.manual_seed(0)
        task = make_task(minicpm_dir, minicpm_dir, cfg, torch.device("cpu"))
        assert task.model.gradient_checkpointing is ckpt
        chunks, inv, _, _ = make_chunks(
            task.encode(groups()), task.pad_id, 4096, torch.device("cpu")
        )
        scores = torch.cat([task.scores(task.model, *c) for c in chunks])[inv].view(2, 4, -1)
        assert scores.shape[-1] == 4  # layers 1..4 of the tiny model
        loss = task_loss(scores, None, make_loss("ce"), task.self_distill)
        loss.backward()
        grads.append(
            (
                loss.item(),
                {n: p.grad.clone() for n, p in task.model.named_parameters() if p.requires_grad},
            )
        )
    (l0, g0), (l1, g1) = grads
    assert abs(l0 - l1) < 1e-6 and g0.keys() == g1.keys()
    assert any("linear_head" in n for n in g0) and any("lora_A" in n for n in g0)
    assert max((g0[n] - g1[n]).abs().max().item() for n in g0) < 1e-6


def test_layerwise_lora_with_heads_and_merge(tmp_path, minicpm_dir):
    from safetensors.torch import load_file

    from crossrank.families import load_decoder
    from crossrank.models.adapters import apply_adapter

    data = write_groups(tmp_path / "d.jsonl")
    kw = dict(lora_rank=4, lora_extra_parameters=["linear_head"], start_layer=2, lr=1e-2)
    train(dcfg(tmp_path, minicpm_dir, data, "ad", **kw))
    train(dcfg(tmp_path, minicpm_dir, data, "merged", merge=True, **kw))
    names = set(load_file(str(tmp_path / "ad" / "adapter_model.safetensors")))
    assert "base_model.model.lm_head.0.linear_head.weight" in names
    assert not (tmp_path / "ad" / "config.json").exists()
    assert (tmp_path / "merged" / "config.json").exists()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 50, 51, 52, 0, 0]])
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        a = apply_adapter(load_decoder(minicpm_dir), tmp_path / "ad").score(
            ids, mask, cutoff_layers=[2, 3, 4]
        )
        b = load_decoder(tmp_path / "merged").score(ids, mask, cutoff_layers=[2, 3, 4])
        c = load_decoder(minicpm_dir).score(ids, mask, cutoff_layers=[2, 3, 4])
    assert (a - b).abs().max().item() < 1e-5
    assert (a - c).abs().max().item() > 1e-3


def test_decoder_option_errors(tmp_path, gemma_dir, bert_dir):
    from crossrank.errors import CrossrankError

    data = write_groups(tmp_path / "d.jsonl")
    with pytest.raises(CrossrankError, match="layerwise"):
        Trainer(dcfg(tmp_path, gemma_dir, data, "a", start_layer=1))
    with pytest.raises(CrossrankError, match="decoder"):
        Trainer(dcfg(tmp_path, bert_dir, data, "b", lora_rank=4))
    with pytest.raises(CrossrankError, match="no linear"):
        Trainer(dcfg(tmp_path, gemma_dir, data, "c", lora_rank=4, target_modules=["qkv"]))
    with pytest.raises(CrossrankError, match="--merge needs"):
        Trainer(dcfg(tmp_path, gemma_dir, data, "d", merge=True))


def test_full_fine_tuning_writes_a_checkpoint_transformers_scores_the_same(tmp_path, gemma_dir):
    from transformers import GemmaForCausalLM

    from crossrank.families import load_decoder

    data = write_groups(tmp_path / "d.jsonl")
    train(dcfg(tmp_path, gemma_dir, data, "out", max_steps=2))
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["GemmaForCausalLM"]
    tok = hf_llm_tokenizer(gemma_dir)
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    ids = [reference_ids(tok, g.query, p, PROMPT, 16, 32) for g in groups() for p in g.passages]
    ref_model = GemmaForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    ours_model, before = load_decoder(out), load_decoder(gemma_dir)
    with torch.no_grad():
        ref = [ref_model(input_ids=torch.tensor([x])).logits[0, -1, yes].item() for x in ids]
        one = lambda m, x: m.score(  # noqa: E731
            torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long), token_ids=[yes]
        ).item()
        ours = [one(ours_model, x) for x in ids]
        old = [one(before, x) for x in ids]
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-4
    assert max(abs(a - b) for a, b in zip(ours, old)) > 1e-3


def test_cli_trains_a_lora_adapter_and_reports_bad_prompts_by_line(tmp_path, gemma_dir):
    import subprocess
    import sys

    data = write_groups(tmp_path / "d.jsonl", n=8)
    common = [sys.executable, "-m", "crossrank", "train", "-m", str(gemma_dir), "--group-size",
              "4", "--batch-size", "2", "--max-steps", "1", "--device", "cpu", "--no-progress",
              "--query-max-length", "16", "--passage-max-length", "32"]  # fmt: skip
    res = subprocess.run(
        [*common, "--data", data, "-o", str(tmp_path / "o"), "--lora-rank", "2",
         "--target-modules", "q_proj", "v_proj"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    conf = json.loads((tmp_path / "o" / "adapter_config.json").read_text())
    assert conf["target_modules"] == ["q_proj", "v_proj"] and conf["lora_alpha"] == 4.0
    bad = tmp_path / "bad.jsonl"
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "prompt": ["not", "a", "string"]})
    bad.write_text("\n".join(lines) + "\n")
    res = subprocess.run(
        [*common, "--data", str(bad), "-o", str(tmp_path / "o2")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2 and "bad.jsonl:3:" in res.stderr and "prompt" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_two_process_lora_matches_one_process(tmp_path, gemma_dir):
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    data = write_groups(tmp_path / "d.jsonl")
    common = ["-m", "crossrank", "train", "-m", str(gemma_dir), "--data", data, "--group-size",
              "4", "--max-steps", "2", "--warmup-ratio", "0", "--lr", "1e-3", "--device", "cpu",
              "--no-progress", "--lora-rank", "4", "--lora-dropout", "0",
              "--query-max-length", "16", "--passage-max-length", "32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, *common, "--batch-size", "4", "-o", str(tmp_path / "one")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *common, "--batch-size", "2", "-o", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 0
