"""The training side of the family seam: what ``crossrank train`` needs of a model family.

The trainer (:mod:`crossrank.train.trainer`) owns the loop (data, optimiser, accumulation, DDP,
checkpoints, logs, the loss by name); a family's :meth:`~crossrank.families.base.Family.train_task`
gives a :class:`TrainTask` that owns the model: how groups become token ids (the family's own
:class:`~crossrank.engine.encoding.PairEncoding` with the training length budgets, see
:meth:`~crossrank.engine.encoding.PairEncoding.training`), how a chunk of pairs becomes
scores, and how the trained model is written (:func:`crossrank.models.weights.write_checkpoint`
or a PEFT adapter). :class:`EncoderTask` serves the cross-encoder families; the decoder
families' task is :class:`crossrank.families.decoder.DecoderTask`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.tokenize import EncodedPair
from crossrank.errors import CrossrankError

#: ``() -> (state under the checkpoint's tensor names, config.json content)``
Checkpoint = Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]


class Example(Protocol):
    """One sampled group of training data (:class:`crossrank.train.data.Group`)."""

    query: str
    #: the positive first
    passages: Sequence[str]
    #: the example's own prompt / instruction (LLM families), or None for the default
    prompt: str | None


class TrainSettings(Protocol):
    """The options of a run a task reads (:class:`crossrank.train.config.TrainConfig`)."""

    model: str
    query_max_length: int
    passage_max_length: int
    max_length: int
    dtype: str | None
    dropout: float | None
    gradient_checkpointing: bool
    lora_rank: int | None
    lora_alpha: float | None
    lora_dropout: float
    target_modules: list[str]
    lora_extra_parameters: list[str]
    start_layer: int | None
    merge: bool


class TrainTask(Protocol):
    """What the trainer needs of a model family."""

    #: the module trained: wrapped by DDP, its trainable parameters optimised
    model: nn.Module
    #: token id used to pad chunks
    pad_id: int
    #: ``--dtype`` means autocast (encoders); else the task loads its weights in that dtype
    autocast: bool
    #: the loss adds, without teacher scores, the distillation of every output column but the
    #: last towards the last (the layerwise reranker's self-distillation)
    self_distill: bool
    #: the input rules dev-set evaluation scores with (None: no ``--eval-dataset``)
    evaluation: PairEncoding | None
    #: the evaluation's default pair length
    eval_max_length: int

    def encode(self, groups: Sequence[Example]) -> list[EncodedPair]:
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

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        """Write the trained model (or adapter) into the existing directory ``dest``;
        ``final``: the run's output rather than a checkpoint (``--merge`` applies)."""
        ...


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability of our encoder to ``p``."""
    from crossrank.models.encoder import Layer

    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        if isinstance(m, Layer):  # attention-probability dropout is a float of the layer
            m.attn_dropout = p


class EncoderTask:
    """Cross-encoders (full fine-tuning): one logit per pair, the group loss on the logits.

    Args:
        model: our cross-encoder, loaded from the run's starting weights.
        body: the module whose ``gradient_checkpointing`` switch applies.
        pair: the family's input rules at ``--max-length`` (dev-set evaluation scores with
            them; training with their :meth:`~crossrank.engine.encoding.PairEncoding.training`).
        pad_id: the tokenizer's pad id.
        checkpoint: ``() -> (state under the checkpoint's names, config.json content)``.
        tokenizer_dir: where the tokenizer files written with the model come from.
    """

    autocast = True
    self_distill = False

    def __init__(
        self,
        settings: TrainSettings,
        device: torch.device,
        *,
        model: nn.Module,
        body: nn.Module,
        pair: PairEncoding,
        pad_id: int,
        checkpoint: Checkpoint,
        tokenizer_dir: Path,
    ) -> None:
        if settings.lora_rank is not None or settings.start_layer is not None:
            raise CrossrankError("--lora-rank and --start-layer apply to decoder (LLM) models")
        self.model = model
        if settings.dropout is not None:
            set_dropout(model, settings.dropout)
        body.gradient_checkpointing = settings.gradient_checkpointing
        model.to(device).train()
        self.pad_id = pad_id
        self.evaluation: PairEncoding | None = pair
        self.pair = pair.training(settings.query_max_length, settings.passage_max_length)
        self.eval_max_length = self.pair.max_length
        self._checkpoint = checkpoint
        self._tokenizer_dir = tokenizer_dir

    def encode(self, groups: Sequence[Example]) -> list[EncodedPair]:
        return self.pair.encode([(g.query, p) for g in groups for p in g.passages])

    def scores(self, model, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return model(input_ids, attention_mask, token_type_ids).reshape(len(input_ids), -1)

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        from crossrank.models.weights import write_checkpoint

        state, config = self._checkpoint()
        write_checkpoint(dest, state, config, dtype=dtype, tokenizer_dir=self._tokenizer_dir)
