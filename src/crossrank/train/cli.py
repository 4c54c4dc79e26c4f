"""``crossrank train`` and ``crossrank mine`` subcommands."""

from __future__ import annotations

import argparse
import json
import sys

from crossrank.errors import CrossrankError


def cmd_train(args: argparse.Namespace) -> int:
    from crossrank.train.config import TrainConfig, from_args
    from crossrank.train.trainer import train

    summary = train(from_args(args, TrainConfig))
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
    from crossrank.train.config import TrainConfig, add_arguments

    p = sub.add_parser(
        "train", help="fine-tune a cross-encoder or LLM reranker on JSON-lines groups"
    )
    add_arguments(p, TrainConfig)
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
