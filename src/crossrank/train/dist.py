"""Distributed helpers: the process group under ``torchrun`` and the few collectives the
trainer uses (all no-ops in a single process)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dist:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its host."""

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


def shutdown(d: Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.destroy_process_group()


def all_mean(value: float, d: Dist) -> float:
    """Mean of ``value`` over all processes."""
    if not d.on:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def all_true(flag: bool, d: Dist) -> bool:
    """True when ``flag`` is true on every process."""
    if not d.on:
        return flag
    import torch.distributed as dist

    t = torch.tensor([0 if flag else 1], dtype=torch.int64)
    dist.all_reduce(t)
    return int(t.item()) == 0


def barrier(d: Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.barrier()


def gather_rng(d: Dist) -> list[dict[str, Any]]:
    """Every rank's RNG state (what a checkpoint stores), gathered on all ranks."""
    from crossrank.train.checkpoint import rng_state

    state = rng_state()
    if not d.on:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, state)
    return out


def no_sync(module: torch.nn.Module, sync: bool):
    """DDP's ``no_sync`` on accumulation micro-steps; a null context otherwise."""
    from torch.nn.parallel import DistributedDataParallel

    if sync or not isinstance(module, DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()
