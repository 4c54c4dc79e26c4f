"""One training step of FlagEmbedding's LLM reranker fine-tuning and of `crossrank train`'s
decoder task from the same weights and groups (used by scripts/reference_step.py --family).

FlagEmbedding side: its ``AbsLLMRerankerTrainDataset.__getitem__`` builds each group's inputs
(instructions "A: " / "B: ", sep "\\n", the default prompt), ``AbsLLMRerankerCollator`` pads on
the left, and ``CrossDecoderModel`` (``decoder_only.base`` on transformers' Gemma, or
``decoder_only.layerwise`` on FlagEmbedding's own ``LayerWiseMiniCPMForCausalLM``) gives the
loss. crossrank side: ``make_task`` (the decoder families' ``DecoderTask``), full fine-tuning in
fp32. Groups hold exactly 7 negatives, which FlagEmbedding draws in a random order; the loss
does not depend on the order of the negatives, and token ids are compared per group as sets.
"""

from __future__ import annotations

import json
import random
import types
from pathlib import Path

import torch

SHOWN = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.norm.weight",
)


def flag_model(model_dir: Path, family: str, tok):
    if family == "gemma":
        from FlagEmbedding.finetune.reranker.decoder_only.base.modeling import CrossDecoderModel
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir)
        raw = json.loads((model_dir / "config.json").read_text())
        if "rope_theta" not in raw and "rope_parameters" in raw:  # written by transformers 5
            config.rope_theta = raw["rope_parameters"]["rope_theta"]
        base = AutoModelForCausalLM.from_pretrained(
            model_dir, config=config, torch_dtype=torch.float32
        )
        return CrossDecoderModel(base, tokenizer=tok, train_batch_size=4)
    from FlagEmbedding.finetune.reranker.decoder_only.layerwise.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.finetune.reranker.decoder_only.layerwise.modeling import CrossDecoderModel
    from FlagEmbedding.finetune.reranker.decoder_only.layerwise.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    config = LayerWiseMiniCPMConfig.from_pretrained(model_dir)
    config.use_cache = False
    base = LayerWiseMiniCPMForCausalLM.from_pretrained(
        model_dir, config=config, torch_dtype=torch.float32
    )
    return CrossDecoderModel(
        base, tokenizer=tok, train_batch_size=4, start_layer=config.start_layer
    )


def decoder_step(model_dir: Path, groups, family: str, qmax: int, pmax: int) -> None:
    from FlagEmbedding.abc.finetune.reranker.AbsDataset import (
        AbsLLMRerankerCollator,
        AbsLLMRerankerTrainDataset,
    )
    from transformers import AutoTokenizer

    from crossrank.train.config import TrainConfig
    from crossrank.train.trainer import make_task

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:  # FlagEmbedding's runner: unk, else eos
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    tok.padding_side = "left"
    ds = AbsLLMRerankerTrainDataset.__new__(AbsLLMRerankerTrainDataset)
    ds.tokenizer = tok
    ds.args = types.SimpleNamespace(
        query_max_len=qmax, passage_max_len=pmax, train_group_size=8,
        query_instruction_for_rerank="A: ", query_instruction_format="{}{}",
        passage_instruction_for_rerank="B: ", passage_instruction_format="{}{}",
        knowledge_distillation=False, shuffle_ratio=0.0, sep_token="\\n",
    )  # fmt: skip
    ds.max_length = qmax + pmax
    ds.sep_inputs = tok("\n", add_special_tokens=False)["input_ids"]
    ds.dataset = [
        {"query": g.query, "pos": [g.passages[0]], "neg": list(g.passages[1:])} for g in groups
    ]
    random.seed(0)
    items = [ds[i] for i in range(len(groups))]
    collator = AbsLLMRerankerCollator(
        tokenizer=tok, query_max_len=qmax, passage_max_len=pmax, padding=True, return_tensors="pt"
    )
    batch = collator(items)["pair"]

    cfg = TrainConfig(
        model=str(model_dir), data="-", query_max_length=qmax, passage_max_length=pmax, group_size=8
    )
    torch.manual_seed(0)
    task = make_task(model_dir, model_dir, cfg, torch.device("cpu"))
    ours_enc = task.encode(groups)
    same = 0
    for k, (feats, _) in enumerate(items):
        theirs = sorted(tuple(f["input_ids"]) for f in feats[1:])
        mine = sorted(tuple(e.ids) for e in ours_enc[8 * k + 1 : 8 * k + 8])
        same += (list(feats[0]["input_ids"]) == ours_enc[8 * k].ids) + sum(
            a == b for a, b in zip(theirs, mine)
        )
    print(f"identical token ids: {same}/{len(ours_enc)} pairs")

    ref = flag_model(model_dir, family, tok).train()
    out = ref(pair=dict(batch), teacher_scores=None)
    if family == "layerwise":
        n_layers = len(ref.encode(dict(batch)))
        print(f"FlagEmbedding's layerwise model scores {n_layers} layer(s) per pair in training")
    out.loss.backward()
    if family == "layerwise" and n_layers == 1:
        compare(task, ours_enc, out.loss.item(), ref, "crossrank, layers start_layer..last")
        # FlagEmbedding 1.4.2's CrossDecoderModel.encode never passes cutoff_layers, so its
        # model scores the last layer only: crossrank --start-layer <last> is that step
        cfg.start_layer = task.model.config.num_hidden_layers
        torch.manual_seed(0)
        task = make_task(model_dir, model_dir, cfg, torch.device("cpu"))
    label = "crossrank" if family == "gemma" else f"crossrank --start-layer {cfg.start_layer}"
    compare(task, ours_enc, out.loss.item(), ref, label)


def compare(task, ours_enc, ref_loss: float, ref, label: str) -> None:
    from crossrank.train.encoding import make_chunks
    from crossrank.train.losses import make_loss

    task.model.train()
    chunks, inverse, _, _ = make_chunks(ours_enc, task.pad_id, 1 << 16, torch.device("cpu"))
    scores = torch.cat([task.scores(task.model, *c) for c in chunks])[inverse].view(4, 8, -1)
    loss = task.loss(scores, None, make_loss("ce"))
    loss.backward()
    print(f"{label}: loss FlagEmbedding {ref_loss:.6f}, crossrank {loss.item():.6f}")
    theirs = {n.removeprefix("model."): p for n, p in ref.named_parameters()}
    worst = 0.0
    for name, p in task.model.named_parameters():
        q = theirs.get(name)
        if q is None or q.grad is None or p.grad is None or q.grad.norm() == 0:
            continue
        rel = ((p.grad - q.grad).norm() / q.grad.norm()).item()
        worst = max(worst, rel)
        if name in SHOWN or "lm_head" in name:
            print(f"  gradient {name}: relative difference {rel:.2e}")
    print(f"{label}: largest relative gradient difference over all tensors: {worst:.2e}")
