"""The training task seam: what a group's scores and loss are for a model family.

The trainer owns the loop (data, optimiser, accumulation, DDP, checkpoints, logs); a task
owns the model: how groups become token ids, how a chunk of pairs becomes scores, how a
group's scores become the loss, and how the trained model is written. One task per family:

- :class:`~crossrank.train.tasks.encoder.EncoderTask`: cross-encoders, one logit per pair;
- :class:`~crossrank.train.tasks.decoder.DecoderTask`: LLM rerankers (Gemma), the "Yes" logit;
- :class:`~crossrank.train.tasks.decoder.LayerwiseTask`: layerwise MiniCPM, one score per
  trained layer, losses summed over layers plus self-distillation towards the last layer;
- :class:`~crossrank.train.tasks.qwen3.Qwen3Task`: Qwen3-Reranker, the yes-minus-no logit;
- :class:`~crossrank.train.tasks.modernbert.ModernBertTask`: ModernBERT cross-encoders.

A new family's training is one module here plus one line in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from crossrank.errors import UnsupportedModelError

if TYPE_CHECKING:
    from crossrank.train.config import TrainConfig
    from crossrank.train.data import Group
    from crossrank.train.losses import GroupLoss


class TrainTask(Protocol):
    """What the trainer needs of a model family."""

    #: the module trained: wrapped by DDP, its trainable parameters optimised
    model: nn.Module
    #: token id used to pad chunks
    pad_id: int
    #: ``--dtype`` means autocast (encoders); else the task loads its weights in that dtype
    autocast: bool

    def encode(self, groups: Sequence[Group]) -> list[Any]:
        """Token ids of every pair of ``groups``, group by group (the positive first)."""
        ...

    def scores(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Scores ``[n, k]`` of one chunk of pairs (``k`` outputs per pair, e.g. per layer)."""
        ...

    def loss(self, scores: torch.Tensor, teacher: torch.Tensor | None, loss: GroupLoss):
        """The loss of a micro-step from scores ``[batch, group, k]`` (positive at index 0)."""
        ...

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        """Write the trained model (or adapter) into the existing directory ``dest``;
        ``final``: the run's output rather than a checkpoint (``--merge`` applies)."""
        ...

    def evaluator(self, cfg: TrainConfig, device: torch.device) -> Callable | None:
        """A dev-set evaluator ``(model) -> metrics`` for ``--eval-dataset``."""
        ...


def make_task(init_dir: Path, load_dir: Path, cfg: TrainConfig, device: torch.device) -> TrainTask:
    """The task of the checkpoint's family. ``load_dir`` holds the weights to start from (the
    initial model, or the checkpoint resumed); ``init_dir`` its tokenizer and base config."""
    from crossrank.config import read_config
    from crossrank.families import family_for

    name = family_for(read_config(init_dir / "config.json")).name
    if name not in TASKS:
        raise UnsupportedModelError(f"training the {name} family is not supported yet")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(init_dir, load_dir, cfg, device)


#: family name -> "module:class" of its training task (one line per family)
TASKS: dict[str, str] = {
    "encoder": "crossrank.train.tasks.encoder:EncoderTask",
    "gemma": "crossrank.train.tasks.decoder:DecoderTask",
    "minicpm-layerwise": "crossrank.train.tasks.decoder:LayerwiseTask",
    "qwen3": "crossrank.train.tasks.qwen3:Qwen3Task",
    "modernbert": "crossrank.train.tasks.modernbert:ModernBertTask",
}
