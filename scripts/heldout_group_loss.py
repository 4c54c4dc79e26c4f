"""Group loss of rerankers on training groups a run did not reach: did the stage learn?

A training log's loss is measured on the batches being trained on. This takes the groups of
the steps *after* a run's last one (the same file, seed, group size and batch size as
``crossrank train``: its ``GroupSchedule``), which that run never saw, scores every group with
each model given (crossrank's inference path, as ``crossrank eval`` scores), and reports each
model's mean group cross-entropy, ``-log softmax(scores)[positive]`` (the training loss;
``ln(group size)`` is chance), and the paired difference of each later model to the first:

    .venv/bin/python scripts/heldout_group_loss.py build/llm-learning/train-b.jsonl \\
        --after-steps 500 --steps 250 -m build/llm-learning/gemma-full \\
        -m build/llm-learning/gemma-lora --prompt "Relevant?"

Used in docs/training.md ("Does it learn?") on the LoRA third of ``llm-learning-debian.sh``.
"""

from __future__ import annotations

import argparse
import math

import torch

from crossrank import Reranker
from crossrank.eval.metrics import Evaluation
from crossrank.eval.significance import compare
from crossrank.train.data import GroupSchedule, load_examples


def group_losses(reranker: Reranker, groups, **options) -> dict[str, dict[str, float]]:
    """``{group index: {"loss": cross-entropy of its positive}}``."""
    pairs = [(g.query, p) for g in groups for p in g.passages]
    scores = torch.tensor(reranker.compute_score(pairs, **options)).view(len(groups), -1)
    losses = -torch.log_softmax(scores.double(), dim=-1)[:, 0]
    return {str(i): {"loss": float(v)} for i, v in enumerate(losses)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="the training file the run used (JSON lines)")
    ap.add_argument("--after-steps", type=int, required=True, help="the run's --max-steps")
    ap.add_argument("--steps", type=int, default=250, help="steps' worth of unseen groups")
    ap.add_argument("--model", "-m", action="append", required=True, help="repeat; first = base")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--prompt", help="bge LLM rerankers' prompt (as crossrank eval)")
    ap.add_argument("--instruction", help="Qwen3-Reranker's instruction (as crossrank eval)")
    ap.add_argument("--cutoff-layers", type=int, help="layerwise rerankers: score at this layer")
    args = ap.parse_args()

    examples = load_examples(args.data, args.group_size)
    schedule = GroupSchedule(
        examples, group_size=args.group_size, batch_size=args.batch_size, seed=args.seed
    )
    steps = range(args.after_steps, args.after_steps + args.steps)
    groups = [g for step in steps for g in schedule.micro_batch(step, 0)]
    options = {
        "prompt": args.prompt,
        "instruction": args.instruction,
        "cutoff_layers": args.cutoff_layers,
    }
    options = {k: v for k, v in options.items() if v is not None}
    print(
        f"{len(groups)} groups of steps {steps.start}-{steps.stop - 1} of {args.data} "
        f"(chance: ln {args.group_size} = {math.log(args.group_size):.4f})"
    )
    results = []
    for model in args.model:
        reranker = Reranker(model, max_length=args.max_length, show_progress=False)
        ev = Evaluation()
        ev.per_query = group_losses(reranker, groups, **options)
        results.append(ev)
        mean = sum(v["loss"] for v in ev.per_query.values()) / len(groups)
        print(f"M{len(results)} {model}: group loss {mean:.4f}")
    for i, ev in enumerate(results[1:], 2):
        c = compare(ev, results[0], measure="loss")
        print(
            f"M{i} - M1: {c.delta:+.4f} ± {c.stderr:.4f} (t {c.t:.2f}, p {c.p_value:.4f}); "
            f"lower in {c.worse} groups, higher in {c.better}"
        )


if __name__ == "__main__":
    main()
