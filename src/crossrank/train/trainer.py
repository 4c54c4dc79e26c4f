"""The training loop: group loss, AdamW with linear warmup/decay, accumulation, DDP, resume.

:class:`Trainer` owns the loop; what a model family's inputs and scores are and how its model
is written is the family's training task (:mod:`crossrank.families.training`), the loss is
picked by name (:mod:`crossrank.train.losses`).

Example:
    >>> from crossrank.train.trainer import TrainConfig, train
    >>> train(TrainConfig(model="BAAI/bge-reranker-base", data="train.jsonl", output="out"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrank.errors import CrossrankError, InputError, UnsupportedModelError
from crossrank.families.training import TrainTask
from crossrank.train.config import TrainConfig, validate
from crossrank.train.dist import all_mean, barrier, gather_rng, init_distributed, no_sync
from crossrank.train.encoding import make_chunks
from crossrank.train.losses import task_loss

logger = logging.getLogger(__name__)

__all__ = ["GroupScorer", "TrainConfig", "Trainer", "make_chunks", "make_task", "train"]


def make_task(init_dir: Path, load_dir: Path, cfg: TrainConfig, device: torch.device) -> TrainTask:
    """The training task of the checkpoint's family (its ``train_task``). ``load_dir`` holds
    the weights to start from (the initial model, or the checkpoint resumed); ``init_dir`` its
    tokenizer and base config."""
    from crossrank.config import read_config
    from crossrank.families import family_for

    family = family_for(read_config(init_dir / "config.json"))
    if family.train_task is None:
        raise UnsupportedModelError(f"training the {family.name} family is not supported yet")
    return family.train_task(init_dir, load_dir, cfg, device)


class GroupScorer(nn.Module):
    """Scores every chunk of a micro-step in one ``forward`` (so DDP sees one forward)."""

    def __init__(self, model: nn.Module, score) -> None:
        super().__init__()
        self.model = model
        self._score = score

    def forward(self, chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]):
        return torch.cat([self._score(self.model, ids, mask, types) for ids, mask, types in chunks])


class Trainer:
    """A fine-tuning run: set up from a :class:`TrainConfig`, run with :meth:`train`."""

    def __init__(self, cfg: TrainConfig) -> None:
        from crossrank.hub import resolve_model_dir
        from crossrank.reranker import resolve_device
        from crossrank.train import checkpoint as ckpt
        from crossrank.train.data import GroupSchedule, load_examples
        from crossrank.train.losses import make_loss
        from crossrank.train.optim import linear_schedule, make_optimizer, resolve_amp
        from crossrank.train.outdir import check_output, prepare_output

        validate(cfg)
        self.cfg = cfg
        device = resolve_device(cfg.device)
        self.dist = d = init_distributed(device)
        if device.type == "cuda" and d.on:
            device = torch.device("cuda", d.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.output = output = Path(cfg.output)
        self.init_dir = init_dir = resolve_model_dir(cfg.model)

        resume_dir = check_output(cfg, init_dir)  # read-only pre-flight, before any work
        torch.manual_seed(cfg.seed)  # the fresh head of a bare encoder is reproducible
        self.task = task = make_task(init_dir, resume_dir or init_dir, cfg, device)
        if cfg.eval_dataset and task.evaluation is None:
            raise CrossrankError(
                "--eval-dataset is not available for decoder training yet; evaluate the saved "
                "model with `crossrank eval`"
            )
        self.amp_dtype = resolve_amp(cfg.dtype, device) if task.autocast else None
        self.loss_fn = make_loss(cfg.loss, cfg.distill_weight)

        self.examples = load_examples(cfg.data, cfg.group_size)
        if self.loss_fn.needs_teacher and self.examples[0].pos_scores is None:
            raise InputError(f"{cfg.data}: --loss {cfg.loss} needs pos_scores / neg_scores")
        self.schedule = GroupSchedule(
            self.examples,
            group_size=cfg.group_size,
            batch_size=cfg.batch_size,
            accum=cfg.grad_accum,
            world=d.world,
            seed=cfg.seed,
        )
        self.total = cfg.max_steps or cfg.epochs * self.schedule.steps_per_epoch
        self.warmup = math.ceil(cfg.warmup_ratio * self.total)
        self.scorer: nn.Module = GroupScorer(task.model, task.scores)
        if d.on:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.scorer = DDP(self.scorer, device_ids=ids)
        self.optimizer = make_optimizer(task.model, cfg.lr, cfg.weight_decay)
        self.scheduler = linear_schedule(self.optimizer, self.warmup, self.total)
        fp16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None

        self.start, self.best = 0, None
        if resume_dir is not None:
            self.start, self.best = ckpt.load_state(
                resume_dir, self.optimizer, self.scheduler, self.scaler, d.rank
            )
            logger.info("resumed from %s at step %d", resume_dir, self.start)
        else:
            torch.manual_seed(cfg.seed + d.rank)
        self.evaluator = None
        if cfg.eval_dataset and d.main and task.evaluation is not None:
            from crossrank.train.deveval import DevEvaluator

            self.evaluator = DevEvaluator(
                cfg.eval_dataset,
                split=cfg.eval_split,
                run=cfg.eval_run,  # type: ignore[arg-type]  # validate() checked it
                max_queries=cfg.eval_max_queries,
                pair_tokenizer=task.evaluation,
                pad_id=task.pad_id,
                max_length=cfg.eval_max_length or task.eval_max_length,
                device=device,
            )
        # the output is changed only once everything above (data, model, state) is valid
        barrier(d)  # every process has checked it before the main one changes anything
        self.log_path = output / "train_log.jsonl"
        if d.main:
            from crossrank.train.runlog import trim_log

            prepare_output(cfg, resume_dir is not None)
            trim_log(self.log_path, self.start)
        barrier(d)
        self.pairs_per_step = self.schedule.global_batch * cfg.group_size

    # -- one optimizer step ----------------------------------------------------------------

    def step(self, step: int) -> tuple[float, float, int, int]:
        """Run optimizer step ``step``; returns ``(loss, grad norm, real, padded tokens)``."""
        cfg, d, device = self.cfg, self.dist, self.device
        step_loss, real_tokens, padded_tokens = 0.0, 0, 0
        for micro in range(cfg.grad_accum):
            groups = self.schedule.micro_batch(step, micro, d.rank)
            chunks, inverse, real, padded = make_chunks(
                self.task.encode(groups), self.task.pad_id, cfg.max_batch_tokens, device
            )
            real_tokens += real
            padded_tokens += padded
            teacher = None
            if groups[0].teacher is not None:
                teacher = torch.tensor([g.teacher for g in groups], device=device)
            sync = not d.on or micro == cfg.grad_accum - 1
            with no_sync(self.scorer, sync):
                amp = self.amp_dtype
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    scores = self.scorer(chunks)[inverse].view(len(groups), cfg.group_size, -1)
                loss = task_loss(scores, teacher, self.loss_fn, self.task.self_distill)
                loss = loss / cfg.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            step_loss += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        params = [p for p in self.task.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss, grad_norm, real_tokens, padded_tokens

    # -- saving ----------------------------------------------------------------------------

    def save_checkpoint(self, step: int) -> None:
        from crossrank.train import checkpoint as ckpt

        states = gather_rng(self.dist)
        if self.dist.main:
            ckpt.save_checkpoint(
                self.output / f"checkpoint-{step}",
                write_model=lambda dest: self.task.write_model(dest, None),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                step=step,
                rank_states=states,
                extra={"best": self.best, "world": self.dist.world, "config": self.cfg.as_dict()},
            )
            ckpt.prune_checkpoints(self.output, self.cfg.save_total_limit)
        barrier(self.dist)

    def evaluate(self, done: int, bar) -> None:
        from crossrank.train.checkpoint import atomic_dir
        from crossrank.train.runlog import write_log

        assert self.evaluator is not None
        metrics = self.evaluator(self.task.model)
        self.task.model.train()
        write_log(self.log_path, {"step": done, **metrics}, self.dist.main)
        bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        score = metrics["ndcg@10"]
        if self.cfg.save_best and (self.best is None or score > self.best):
            self.best = score

            def fill(tmp: Path) -> None:
                self.task.write_model(tmp, None)
                (tmp / "eval.json").write_text(json.dumps({"step": done, **metrics}) + "\n")

            atomic_dir(self.output / "best", fill)

    # -- the loop --------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run the remaining steps; returns a summary (steps, loss, pairs/s, best metric)."""
        from crossrank.progress import bar as progress_bar
        from crossrank.train import checkpoint as ckpt
        from crossrank.train.dist import shutdown
        from crossrank.train.optim import resolve_save_dtype
        from crossrank.train.runlog import write_log

        cfg, d, total = self.cfg, self.dist, self.total
        logger.info(
            "training %d steps (%d per epoch, %d groups), %d pairs per step, warmup %d",
            total,
            self.schedule.steps_per_epoch,
            len(self.examples),
            self.pairs_per_step,
            self.warmup,
        )
        bar = progress_bar(  # a terminal only (--no-progress: never); a log gets the log lines
            show=None if d.main and cfg.show_progress else False,
            total=total,
            initial=self.start,
            desc="training",
            unit="step",
        )
        win = _Window()
        train_time = 0.0
        last_log: dict[str, Any] = {}
        for step in range(self.start, total):
            t0 = time.perf_counter()
            step_loss, grad_norm, real, padded = self.step(step)
            dt = time.perf_counter() - t0
            train_time += dt
            win.add(step_loss, dt, real, padded)
            done = step + 1
            lr = self.scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            if done % cfg.logging_steps == 0 or done == total:
                rec = {
                    "step": done,
                    "epoch": round(done / self.schedule.steps_per_epoch, 4),
                    "loss": round(all_mean(win.loss / win.steps, d), 6),
                    "lr": lr,
                    "grad_norm": round(grad_norm, 4),
                    "pairs_per_s": round(win.steps * self.pairs_per_step / max(win.time, 1e-9), 2),
                    "padding": round(1 - win.real / max(win.padded, 1), 4),
                    "elapsed_s": round(train_time, 1),
                }
                last_log = rec
                write_log(self.log_path, rec, d.main)
                win = _Window()
            if self.evaluator is not None and (
                done == total or (cfg.eval_steps and done % cfg.eval_steps == 0)
            ):
                self.evaluate(done, bar)
            if cfg.save_steps and done % cfg.save_steps == 0 and done < total:
                self.save_checkpoint(done)
        bar.close()

        if d.main:
            dtype = resolve_save_dtype(cfg.save_dtype)
            ckpt.save_final(lambda dest: self.task.write_model(dest, dtype, True), self.output)
        barrier(d)
        done_pairs = (total - self.start) * self.pairs_per_step
        summary = {
            "steps": total,
            "start_step": self.start,
            "final_loss": last_log.get("loss"),
            "pairs": done_pairs,
            "train_time_s": round(train_time, 1),
            "pairs_per_s": round(done_pairs / max(train_time, 1e-9), 2),
            "best_ndcg@10": self.best,
            "output": str(self.output),
        }
        write_log(self.log_path, {"summary": summary}, d.main)
        shutdown(d)
        return summary


class _Window:
    """Sums over the steps since the last log record."""

    def __init__(self) -> None:
        self.loss, self.steps, self.time, self.real, self.padded = 0.0, 0, 0.0, 0, 0

    def add(self, loss: float, dt: float, real: int, padded: int) -> None:
        self.loss += loss
        self.steps += 1
        self.time += dt
        self.real += real
        self.padded += padded


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a fine-tuning job; returns a summary (steps, loss, pairs/s, best metric)."""
    return Trainer(cfg).train()
