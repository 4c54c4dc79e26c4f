"""Options of a training run, defined once: :class:`TrainConfig`'s fields carry their CLI help,
and ``crossrank train``'s parser is derived from them (:func:`add_arguments`).

Example:
    >>> cfg = TrainConfig(model="BAAI/bge-reranker-base", data="train.jsonl", output="out")
    >>> validate(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from crossrank.errors import CrossrankError


def opt(default: Any = dataclasses.MISSING, help: str = "", **cli: Any) -> Any:
    """A dataclass field whose metadata is its command-line option.

    ``cli`` may hold ``short`` ("-m"), ``flag`` (the option name when it is not the field's),
    ``invert`` (a True-by-default bool shown as ``--no-...``), ``choices`` and ``metavar``.
    """
    meta = {"help": help, **cli}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Options of a fine-tuning run (defaults: the reference's encoder recipe)."""

    model: str = opt(help="initial checkpoint directory or hub id", short="-m")
    data: str = opt(help='JSON lines (.gz ok) {"query","pos","neg","prompt"?,"pos_scores"?}')
    output: str = opt("crossrank-model", "output directory", short="-o")
    group_size: int = opt(8, "passages per query, 1 positive (8)")
    batch_size: int = opt(4, "queries (groups) per micro-step per process (4)")
    query_max_length: int = opt(32, "query tokens (32)")
    passage_max_length: int = opt(128, "passage tokens (128)")
    max_length: int = opt(512, "pair tokens (512)")
    lr: float = opt(6e-5, "peak learning rate (6e-5)")
    epochs: int = opt(2, "epochs (2)")
    max_steps: int | None = opt(None, "optimizer steps (overrides epochs)")
    grad_accum: int = opt(1, "micro-steps per optimizer step")
    warmup_ratio: float = opt(0.1, "warmup share (0.1)")
    weight_decay: float = opt(0.01, "AdamW weight decay (0.01)")
    max_grad_norm: float = opt(1.0, "gradient clipping (1.0)")
    seed: int = opt(42, "seed of head init, data order and dropout (42)")
    loss: str = opt("ce", "group loss: ce (cross-entropy, + distillation with teacher scores) "
                    "or distill (teacher scores only)")  # fmt: skip
    gradient_checkpointing: bool = opt(False, "recompute activations in backward")
    lora_rank: int | None = opt(None, "decoders: train a LoRA adapter of this rank (default: "
                                "full fine-tuning)")  # fmt: skip
    lora_alpha: float | None = opt(None, "LoRA alpha (default: 2 x rank)")
    lora_dropout: float = opt(0.1, "LoRA dropout (0.1)")
    target_modules: list[str] = opt(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "linears LoRA adapts (q_proj k_proj v_proj o_proj)",
    )
    lora_extra_parameters: list[str] = opt(
        [], "modules trained in full beside LoRA, e.g. linear_head (layerwise heads)"
    )
    start_layer: int | None = opt(
        None, "layerwise: first layer whose head is trained (default: the checkpoint's)"
    )
    merge: bool = opt(False, "LoRA: write the merged full checkpoint instead of the adapter")
    dtype: str | None = opt(
        None,
        "encoders: autocast (bf16 / fp16 on CUDA, bf16 on a CPU with bf16 units); "
        "decoders: the frozen base's dtype",
    )
    device: str | None = opt(None, "cpu, cuda (default: cuda if available)")
    distill_weight: float = opt(1.0, "weight of the teacher term of --loss ce (1.0)")
    dropout: float | None = opt(None, "override the checkpoint's dropout probabilities")
    max_batch_tokens: int = opt(16384, "padded tokens per forward chunk of a micro-step")
    logging_steps: int = opt(10, "log every N steps (10)")
    save_steps: int | None = opt(None, "checkpoint every N steps")
    save_total_limit: int = opt(2, "checkpoints kept (2)")
    resume: bool = opt(False, "continue from the last checkpoint in --output")
    overwrite_output_dir: bool = opt(
        False, "write into a non-empty --output (an earlier run there is started over)"
    )
    allow_config_change: bool = opt(False, "--resume even when options differ from the run's")
    save_dtype: str | None = opt(None, "fp16 / bf16 final weights (default fp32)")
    eval_dataset: str | None = opt(None, "BEIR directory for periodic evaluation")
    eval_split: str = opt("dev", "split of --eval-dataset (dev)")
    eval_run: str | None = opt(None, "first-stage TREC run to rerank")
    eval_max_queries: int | None = opt(None, "evaluate on a sample of N queries")
    eval_steps: int | None = opt(None, "evaluate every N steps (default: at the end)")
    eval_max_length: int | None = opt(None, "pair tokens at evaluation")
    save_best: bool = opt(False, "keep the best model in OUTPUT/best")
    show_progress: bool = opt(True, "no progress bar", flag="--no-progress", invert=True)

    def as_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (a ``pathlib.Path`` given for a path becomes str)."""
        return {
            k: os.fspath(v) if isinstance(v, os.PathLike) else v
            for k, v in dataclasses.asdict(self).items()
        }


def validate(cfg: TrainConfig) -> None:
    """Raise a :class:`CrossrankError` naming the first invalid option."""
    from crossrank.train.losses import LOSSES

    checks = [
        (cfg.group_size >= 1, "--group-size must be >= 1"),
        (cfg.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.grad_accum >= 1, "--grad-accum must be >= 1"),
        (cfg.lr > 0, "--lr must be > 0"),
        (cfg.epochs >= 1 or cfg.max_steps, "--epochs must be >= 1"),
        (cfg.max_steps is None or cfg.max_steps >= 1, "--max-steps must be >= 1"),
        (0 <= cfg.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
        (cfg.query_max_length >= 1 and cfg.passage_max_length >= 1, "lengths must be >= 1"),
        (cfg.logging_steps >= 1, "--logging-steps must be >= 1"),
        (cfg.loss in LOSSES, f"unknown --loss {cfg.loss!r}; use one of {', '.join(LOSSES)}"),
        (cfg.lora_rank is None or cfg.lora_rank >= 1, "--lora-rank must be >= 1"),
        (0 <= cfg.lora_dropout < 1, "--lora-dropout must be in [0, 1)"),
        (not cfg.merge or cfg.lora_rank is not None, "--merge needs --lora-rank"),
        (not cfg.save_best or bool(cfg.eval_dataset), "--save-best needs --eval-dataset"),
        (
            not cfg.eval_dataset or bool(cfg.eval_run),
            "--eval-dataset needs --eval-run (the first-stage run file to rerank)",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise CrossrankError(msg)


# -- the command line, derived from the fields ---------------------------------------------


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(element type, is_list)`` of a field annotation, ``Optional`` removed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def add_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One option per field of ``cls`` (``--field-name``), help and default from the field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        names = [meta.get("flag") or "--" + f.name.replace("_", "-")]
        if meta.get("short"):
            names.insert(0, meta["short"])
        tp, is_list = _base_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "")}
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if tp is bool:
            kw["action"] = "store_false" if meta.get("invert") else "store_true"
        else:
            kw["type"] = tp
            if is_list:
                kw["nargs"] = "+"
            if "choices" in meta:
                kw["choices"] = meta["choices"]
            if "metavar" in meta:
                kw["metavar"] = meta["metavar"]
        if required:
            kw["required"] = True
        else:
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            kw["default"] = default
        parser.add_argument(*names, **kw)


def from_args(args: argparse.Namespace, cls: type = TrainConfig) -> Any:
    """The config built from parsed arguments (every field of ``cls``)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
