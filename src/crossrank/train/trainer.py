"""The training loop: group loss, AdamW with linear warmup/decay, accumulation, DDP, resume.

Example:
    >>> from crossrank.train.trainer import TrainConfig, train
    >>> train(TrainConfig(model="BAAI/bge-reranker-base", data="train.jsonl", output="out"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossrank.errors import CrossrankError

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of a fine-tuning run (defaults: the reference's encoder recipe)."""

    model: str
    data: str
    output: str = "crossrank-model"
    group_size: int = 8
    batch_size: int = 4  # queries (groups) per process and micro-step
    query_max_length: int = 32
    passage_max_length: int = 128
    max_length: int = 512
    lr: float = 6e-5
    epochs: int = 2
    max_steps: int | None = None
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    gradient_checkpointing: bool = False
    dtype: str | None = None  # "bf16" / "fp16": autocast, CUDA only
    device: str | None = None
    distill_weight: float = 1.0
    dropout: float | None = None  # override the checkpoint's dropout probabilities
    max_batch_tokens: int = 16384  # padded tokens per forward chunk of a micro-step
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int = 2
    resume: bool = False
    save_dtype: str | None = None  # "fp16" / "bf16" for the final model files
    eval_dataset: str | None = None
    eval_split: str = "dev"
    eval_run: str | None = None
    eval_max_queries: int | None = None
    eval_steps: int | None = None  # None: evaluate at the end only
    eval_max_length: int | None = None
    save_best: bool = False
    show_progress: bool = True


# -- distributed ---------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_mean(value: float, d: Dist) -> float:
    if not d.on:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def barrier(d: Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.barrier()


# -- model pieces --------------------------------------------------------------------------


class GroupScorer(nn.Module):
    """Scores every chunk of a micro-step in one ``forward`` (so DDP sees one forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]):
        return torch.cat([self.model(ids, mask, types) for ids, mask, types in chunks])


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability of our encoder to ``p``."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        if hasattr(m, "attn_dropout"):
            m.attn_dropout = p


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (the usual recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warmup from 0 to the peak lr over ``warmup`` steps, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class PairEncoder:
    """Encodes sampled groups with the reference's training length rules.

    FlagEmbedding's encoder fine-tuning cuts the query to ``query_max_length +
    passage_max_length // 4`` tokens and the passage to ``passage_max_length +
    query_max_length // 2``, then cuts the assembled pair (special tokens included) to
    ``query_max_length + passage_max_length`` on the passage side. A short query thus leaves
    its unused budget to the passage. ``max_length`` caps the pair on top of that.
    """

    def __init__(self, model_dir: Path, cfg: TrainConfig, use_type_ids: bool, pad_default: int):
        from crossrank.engine.tokenize import PairTokenizer, load_tokenizer, pad_token_id

        tok = load_tokenizer(model_dir)
        self.pair = PairTokenizer(tok, max_length=cfg.max_length, use_type_ids=use_type_ids)
        self.pad_id = pad_token_id(tok, model_dir, pad_default)
        qmax, pmax = cfg.query_max_length, cfg.passage_max_length
        self.pair_max, _ = self.pair.limits(min(cfg.max_length, qmax + pmax))  # room for text
        self.query_cut = min(qmax + pmax // 4, self.pair_max - self.pair.num_special)
        self.passage_cut = pmax + qmax // 2

    def encode(self, groups) -> list:
        queries = list(dict.fromkeys(g.query for g in groups))
        q_encs = dict(
            zip(queries, self.pair.tokenizer.encode_batch(queries, add_special_tokens=False))
        )
        passages = [p for g in groups for p in g.passages]
        p_encs = self.pair.tokenizer.encode_batch(passages, add_special_tokens=False)
        out, i = [], 0
        special = self.pair.num_special
        for g in groups:
            q = q_encs[g.query]
            for _ in g.passages:
                limit = min(self.pair_max, min(len(q), self.query_cut) + self.passage_cut + special)
                out.append(self.pair.assemble(q, p_encs[i], limit, self.query_cut))
                i += 1
        return out


def make_chunks(encoded: list, pad_id: int, max_tokens: int, device: torch.device):
    """Length-sorted chunks under a padded-token budget, and the permutation back."""
    from crossrank.engine.batching import collate, plan_batches

    plan = plan_batches([len(e) for e in encoded], max_tokens=max_tokens)
    chunks = []
    for idx in plan:
        b = collate([encoded[i] for i in idx], pad_id)
        types = b.token_type_ids.to(device) if b.token_type_ids is not None else None
        chunks.append((b.input_ids.to(device), b.attention_mask.to(device), types))
    order = torch.from_numpy(np.concatenate(plan))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    padded = sum(c[0].numel() for c in chunks)
    real = sum(len(e) for e in encoded)
    return chunks, inverse.to(device), real, padded


# -- the loop ------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a fine-tuning job; returns a summary (steps, loss, pairs/s, best metric)."""
    from crossrank.config import EncoderConfig, read_config
    from crossrank.hub import resolve_model_dir
    from crossrank.models import load_cross_encoder
    from crossrank.reranker import resolve_device
    from crossrank.train import checkpoint as ckpt
    from crossrank.train.data import GroupSchedule, load_examples
    from crossrank.train.losses import group_loss

    validate(cfg)
    device = resolve_device(cfg.device)
    d = init_distributed(device)
    if device.type == "cuda" and d.on:
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    amp_dtype = resolve_amp(cfg.dtype, device)
    output = Path(cfg.output)
    init_dir = resolve_model_dir(cfg.model)
    config = EncoderConfig.from_dict(read_config(init_dir / "config.json"))

    resume_dir = ckpt.find_last_checkpoint(output) if cfg.resume else None
    if cfg.resume and resume_dir is None:
        logger.warning("--resume: no checkpoint under %s; starting from scratch", output)
    torch.manual_seed(cfg.seed)  # the fresh head of a bare encoder is reproducible
    model = load_cross_encoder(resume_dir or init_dir)
    if resume_dir is not None:
        config = EncoderConfig.from_dict(read_config(resume_dir / "config.json"))
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    model.encoder.gradient_checkpointing = cfg.gradient_checkpointing
    model.to(device).train()
    encoder = PairEncoder(init_dir, cfg, config.type_vocab_size > 1, config.pad_token_id)

    examples = load_examples(cfg.data, cfg.group_size)
    schedule = GroupSchedule(
        examples,
        group_size=cfg.group_size,
        batch_size=cfg.batch_size,
        accum=cfg.grad_accum,
        world=d.world,
        seed=cfg.seed,
    )
    total = cfg.max_steps or cfg.epochs * schedule.steps_per_epoch
    warmup = math.ceil(cfg.warmup_ratio * total)
    scorer: nn.Module = GroupScorer(model)
    if d.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        scorer = DDP(scorer, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = linear_schedule(optimizer, warmup, total)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    start, best = 0, None
    if resume_dir is not None:
        start, best = load_state(resume_dir, optimizer, scheduler, scaler, d.rank)
        logger.info("resumed from %s at step %d", resume_dir, start)
    else:
        torch.manual_seed(cfg.seed + d.rank)
    evaluator = make_evaluator(cfg, encoder, device) if cfg.eval_dataset and d.main else None
    log_path = output / "train_log.jsonl"
    if d.main:
        output.mkdir(parents=True, exist_ok=True)
        trim_log(log_path, start)
    pairs_per_step = schedule.global_batch * cfg.group_size
    logger.info(
        "training %d steps (%d per epoch, %d groups), %d pairs per step, warmup %d",
        total,
        schedule.steps_per_epoch,
        len(examples),
        pairs_per_step,
        warmup,
    )

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=start,
        desc="training",
        unit="step",
        disable=not (d.main and cfg.show_progress),
        dynamic_ncols=True,
    )
    win_loss, win_steps, win_time, win_real, win_padded = 0.0, 0, 0.0, 0, 0
    train_time, losses = 0.0, []
    last_log: dict[str, Any] = {}

    def save_ckpt(step: int) -> None:
        states = gather_rng(d)
        if d.main:
            ckpt.save_checkpoint(
                output / f"checkpoint-{step}",
                model=model,
                config=config,
                tokenizer_dir=init_dir,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                step=step,
                rank_states=states,
                extra={"best": best, "world": d.world, "config": dataclasses.asdict(cfg)},
            )
            ckpt.prune_checkpoints(output, cfg.save_total_limit)
        barrier(d)

    for step in range(start, total):
        t0 = time.perf_counter()
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            groups = schedule.micro_batch(step, micro, d.rank)
            chunks, inverse, real, padded = make_chunks(
                encoder.encode(groups), encoder.pad_id, cfg.max_batch_tokens, device
            )
            win_real += real
            win_padded += padded
            teacher = None
            if groups[0].teacher is not None:
                teacher = torch.tensor([g.teacher for g in groups], device=device)
            sync = not d.on or micro == cfg.grad_accum - 1
            ctx = scorer.no_sync() if not sync else _null()
            with ctx:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = scorer(chunks)[inverse].view(len(groups), cfg.group_size)
                loss = group_loss(logits, teacher, cfg.distill_weight) / cfg.grad_accum
                (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += float(loss.detach())
        if scaler is not None:
            scaler.unscale_(optimizer)
        clip = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        train_time += dt
        win_time += dt
        win_loss += step_loss
        win_steps += 1
        losses.append(step_loss)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if done % cfg.logging_steps == 0 or done == total:
            mean_loss = all_mean(win_loss / win_steps, d)
            rec = {
                "step": done,
                "epoch": round(done / schedule.steps_per_epoch, 4),
                "loss": round(mean_loss, 6),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": round(grad_norm, 4),
                "pairs_per_s": round(win_steps * pairs_per_step / max(win_time, 1e-9), 2),
                "padding": round(1 - win_real / max(win_padded, 1), 4),
                "elapsed_s": round(train_time, 1),
            }
            last_log = rec
            write_log(log_path, rec, d)
            win_loss, win_steps, win_time, win_real, win_padded = 0.0, 0, 0.0, 0, 0
        if evaluator is not None and (
            done == total or (cfg.eval_steps and done % cfg.eval_steps == 0)
        ):
            metrics = evaluator(model)
            model.train()
            write_log(log_path, {"step": done, **metrics}, d)
            bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            score = metrics["ndcg@10"]
            if cfg.save_best and (best is None or score > best):
                best = score
                ckpt.save_model(model, config, init_dir, output / "best")
                (output / "best" / "eval.json").write_text(
                    json.dumps({"step": done, **metrics}) + "\n"
                )
        if cfg.save_steps and done % cfg.save_steps == 0 and done < total:
            save_ckpt(done)
    bar.close()

    if d.main:
        save_dtype = resolve_save_dtype(cfg.save_dtype)
        save_final(model, config, init_dir, output, save_dtype)
    barrier(d)
    summary = {
        "steps": total,
        "start_step": start,
        "final_loss": last_log.get("loss"),
        "pairs": (total - start) * pairs_per_step,
        "train_time_s": round(train_time, 1),
        "pairs_per_s": round((total - start) * pairs_per_step / max(train_time, 1e-9), 2),
        "best_ndcg@10": best,
        "output": str(output),
    }
    write_log(log_path, {"summary": summary}, d)
    if d.on:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def validate(cfg: TrainConfig) -> None:
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
        (not cfg.save_best or bool(cfg.eval_dataset), "--save-best needs --eval-dataset"),
        (
            not cfg.eval_dataset or bool(cfg.eval_run),
            "--eval-dataset needs --eval-run (the first-stage run file to rerank)",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise CrossrankError(msg)


def resolve_amp(dtype: str | None, device: torch.device) -> torch.dtype | None:
    if dtype in (None, "fp32", "float32"):
        return None
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in table:
        raise CrossrankError(f"unknown --dtype {dtype!r}; use fp32, bf16 or fp16")
    if device.type != "cuda":
        raise CrossrankError(f"--dtype {dtype} (autocast) is only supported on CUDA; use fp32")
    return table[dtype]


def resolve_save_dtype(dtype: str | None) -> torch.dtype | None:
    table = {None: None, "fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise CrossrankError(f"unknown --save-dtype {dtype!r}; use fp32, fp16 or bf16")
    return table[dtype]


def save_final(model, config, init_dir: Path, output: Path, dtype) -> None:
    """Model files at the top of ``output``: written to a temp dir, each moved in atomically."""
    from crossrank.train.checkpoint import write_model_files

    tmp = output / f".tmp-final-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model_files(model, config, init_dir, tmp, dtype=dtype)
    # weights first, config last: config.json is what marks a directory as a model
    names = sorted(p.name for p in tmp.iterdir())
    names.sort(key=lambda n: n == "config.json")
    for name in names:
        os.replace(tmp / name, output / name)
    tmp.rmdir()


def gather_rng(d: Dist) -> list[dict[str, Any]]:
    from crossrank.train.checkpoint import rng_state

    state = rng_state()
    if not d.on:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, state)
    return out


def load_state(resume_dir: Path, optimizer, scheduler, scaler, rank: int):
    from crossrank.train.checkpoint import STATE_FILE, set_rng_state

    meta = json.loads((resume_dir / STATE_FILE).read_text())
    opt = torch.load(resume_dir / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    if scaler is not None and opt.get("scaler"):
        scaler.load_state_dict(opt["scaler"])
    rng_file = resume_dir / f"rng_state_{rank}.pth"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        logger.warning(
            "%s has no RNG state for rank %d (different process count)", resume_dir, rank
        )
    return int(meta["step"]), meta.get("best")


def trim_log(path: Path, start: int) -> None:
    """Keep the log records of steps up to ``start`` (a resumed run rewrites later ones)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in rec and rec["step"] <= start:
            keep.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, path)


def write_log(path: Path, rec: dict[str, Any], d: Dist) -> None:
    if not d.main:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def make_evaluator(cfg: TrainConfig, encoder: PairEncoder, device: torch.device):
    from crossrank.train.deveval import DevEvaluator

    return DevEvaluator(
        cfg.eval_dataset,
        split=cfg.eval_split,
        run=cfg.eval_run,
        max_queries=cfg.eval_max_queries,
        pair_tokenizer=encoder.pair,
        pad_id=encoder.pad_id,
        max_length=cfg.eval_max_length or encoder.pair_max,
        device=device,
    )
