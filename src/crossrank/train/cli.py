"""``crossrank train`` and ``crossrank mine`` subcommands."""

from __future__ import annotations

import argparse
import json
import sys

from crossrank.errors import CrossrankError


def cmd_train(args: argparse.Namespace) -> int:
    from crossrank.train.trainer import TrainConfig, train

    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        output=args.output,
        group_size=args.group_size,
        batch_size=args.batch_size,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        max_length=args.max_length,
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing,
        dtype=args.dtype,
        device=args.device,
        distill_weight=args.distill_weight,
        dropout=args.dropout,
        max_batch_tokens=args.max_batch_tokens,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        resume=args.resume,
        save_dtype=args.save_dtype,
        eval_dataset=args.eval_dataset,
        eval_split=args.eval_split,
        eval_run=args.eval_run,
        eval_max_queries=args.eval_max_queries,
        eval_steps=args.eval_steps,
        eval_max_length=args.eval_max_length,
        save_best=args.save_best,
        show_progress=not args.no_progress,
    )
    summary = train(cfg)
    if summary is not None:
        print(json.dumps(summary))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from crossrank.train.mine import mine, parse_range, write_groups

    if args.first_stage not in (None, "bm25"):
        raise CrossrankError(f"--first-stage {args.first_stage!r}: only bm25 is available")
    if args.run and args.first_stage:
        raise CrossrankError("give --run FILE or --first-stage bm25, not both")
    if args.negatives < 1:
        raise CrossrankError("--negatives must be >= 1")
    from crossrank.atomic import check_output

    check_output(args.output, what="--output")
    teacher = None
    if args.teacher:
        from crossrank.reranker import Reranker

        teacher = Reranker(args.teacher, device=args.device, max_length=args.max_length)
    groups = mine(
        args.dataset,
        split=args.split,
        run=args.run,
        rank_range=parse_range(args.range),
        negatives=args.negatives,
        seed=args.seed,
        max_queries=args.max_queries,
        teacher=teacher,
    )
    write_groups(groups, args.output)
    print(f"wrote {len(groups)} groups to {args.output}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a cross-encoder on JSON-lines groups")
    p.add_argument("--model", "-m", required=True, help="initial checkpoint directory or hub id")
    p.add_argument("--data", required=True, help='JSON lines (.gz ok) {"query","pos","neg"}')
    p.add_argument("--output", "-o", default="crossrank-model", help="output directory")
    p.add_argument("--group-size", type=int, default=8, help="passages per query (8)")
    p.add_argument("--batch-size", type=int, default=4, help="queries per step per process (4)")
    p.add_argument("--query-max-length", type=int, default=32, help="query tokens (32)")
    p.add_argument("--passage-max-length", type=int, default=128, help="passage tokens (128)")
    p.add_argument("--max-length", type=int, default=512, help="pair tokens (512)")
    p.add_argument("--lr", type=float, default=6e-5, help="peak learning rate (6e-5)")
    p.add_argument("--epochs", type=int, default=2, help="epochs (2)")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides epochs)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="warmup share (0.1)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (0.01)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (1.0)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations")
    p.add_argument("--dtype", default=None, help="bf16 or fp16 autocast (CUDA only)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--distill-weight", type=float, default=1.0, help="teacher term weight (1.0)")
    p.add_argument("--dropout", type=float, default=None, help="override dropout probabilities")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="padded tokens per chunk")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (2)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--save-dtype", default=None, help="fp16 / bf16 final weights (default fp32)")
    p.add_argument("--eval-dataset", default=None, help="BEIR directory for periodic evaluation")
    p.add_argument("--eval-split", default="dev")
    p.add_argument("--eval-run", default=None, help="first-stage TREC run to rerank")
    p.add_argument("--eval-max-queries", type=int, default=None)
    p.add_argument("--eval-steps", type=int, default=None, help="evaluate every N steps")
    p.add_argument("--eval-max-length", type=int, default=None, help="pair tokens at evaluation")
    p.add_argument("--save-best", action="store_true", help="keep the best model in OUTPUT/best")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("mine", help="mine hard negatives from a first stage into training groups")
    p.add_argument("--dataset", required=True, help="BEIR-layout directory")
    p.add_argument("--split", default="train")
    p.add_argument("--first-stage", default=None, help="bm25 (the default without --run)")
    p.add_argument("--run", default=None, help="TREC run file as the first stage")
    p.add_argument("--range", default="10:100", help="0-based rank range START:END (10:100)")
    p.add_argument("--negatives", type=int, default=15, help="negatives per query (15)")
    p.add_argument("--output", "-o", required=True, help="JSON lines output (.gz ok)")
    p.add_argument("--teacher", default=None, help="cross-encoder adding pos/neg scores")
    p.add_argument("--device", default=None)
    p.add_argument("--max-length", type=int, default=512, help="teacher pair tokens (512)")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_mine)
