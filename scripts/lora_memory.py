"""Peak memory of one LoRA training step of `crossrank train` on the tiny test decoders.

Builds the tiny random Gemma and layerwise MiniCPM of the test suite, runs one warm-up step
(the optimizer allocates its state), then profiles the next step with torch's memory profiler
and prints, per model: the frozen base's bytes, the trained tensors' bytes, the AdamW state's
bytes, and the peak of tensor memory allocated during the step above what was held before it
(activations, gradients, recomputation): each op's own allocations minus its frees, summed in
the order the ops started (the profiler's op-level view, so a close approximation of the true
peak). CPU only; the numbers are tensor bytes, not RSS.

    PYTHONPATH=src python scripts/lora_memory.py [--dtype bf16] [--group-size 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def step_peak(trainer, step: int) -> int:
    """Peak of (allocated - freed) tensor bytes during optimizer step ``step``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.step(step)
    # each op's own allocations minus frees (children excluded), in the order ops started
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    level = peak = 0
    for e in events:
        level += e.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="fp32", help="frozen base dtype: fp32 or bf16")
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--passage-max-length", type=int, default=96)
    args = ap.parse_args()

    from crossrank.testing import gemma_checkpoint, minicpm_checkpoint, write_groups
    from crossrank.train.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_groups(tmp / "d.jsonl", n=16)
        models = {
            "gemma (tiny)": (gemma_checkpoint(tmp / "gemma"), []),
            "minicpm-layerwise (tiny)": (minicpm_checkpoint(tmp / "minicpm"), ["linear_head"]),
        }
        for name, (model_dir, extra) in models.items():
            for ckpt in (False, True):
                cfg = TrainConfig(
                    model=str(model_dir), data=data, output=str(tmp / f"o-{name[:5]}-{ckpt}"),
                    group_size=args.group_size, batch_size=1, max_steps=3, device="cpu",
                    query_max_length=32, passage_max_length=args.passage_max_length,
                    lora_rank=args.lora_rank, lora_extra_parameters=extra, dtype=args.dtype,
                    gradient_checkpointing=ckpt, show_progress=False,
                )  # fmt: skip
                t = Trainer(cfg)
                t.step(0)
                params = list(t.task.model.parameters())
                states = [v for s in t.optimizer.state.values() for v in s.values()]
                enc = t.task.encode(t.schedule.micro_batch(1, 0))
                rec = {
                    "model": name,
                    "dtype": args.dtype,
                    "gradient_checkpointing": ckpt,
                    "pairs": len(enc),
                    "tokens": sum(len(e) for e in enc),
                    "frozen_bytes": tensor_bytes(p for p in params if not p.requires_grad),
                    "trained_bytes": tensor_bytes(p for p in params if p.requires_grad),
                    "optimizer_bytes": tensor_bytes(s for s in states if s.dim() > 0),
                    "step_peak_bytes": step_peak(t, 1),
                }
                print(json.dumps(rec))


if __name__ == "__main__":
    main()
