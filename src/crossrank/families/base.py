"""The model-family seam: what a family of checkpoints gives :class:`~crossrank.Reranker`.

A family (encoder cross-encoders, bge-reranker-v2-gemma, the layerwise MiniCPM, ...) knows
which ``config.json`` architectures it runs, how to parse that config, how to load its PyTorch
model (or another backend), its input rules (a :class:`~crossrank.engine.encoding.PairEncoding`)
and what its score is. ``Reranker`` composes these; it never branches on the family.

A family also says how ``crossrank train`` trains it (``train_task``) and how its model is
exported to ONNX (``onnx_export``), or that it has none (None).

Adding a family: one module in ``crossrank/families/`` defining a :class:`Family` object named
``FAMILY``, plus one line in :data:`crossrank.families.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from crossrank.engine.backend import Backend
from crossrank.engine.encoding import PairEncoding
from crossrank.engine.onnx_export import OnnxExport
from crossrank.errors import CrossrankError
from crossrank.families.training import TrainSettings, TrainTask
from crossrank.options import Options, family_defaults

#: Reranker options that only some families honour, with their "not given" values (declared
#: in :class:`crossrank.options.Options`); every other option works for all
FAMILY_OPTIONS: dict[str, Any] = family_defaults()

#: the option set a family turns into its input rules and score: the Reranker's
#: :class:`~crossrank.options.Options`, ``max_length`` clamped to the model, ``cutoff_layers``
#: a tuple (one declaration: a new option reaches the families with no field added here)
ScoreOptions = Options


@runtime_checkable
class ModelConfig(Protocol):
    """The parsed ``config.json`` of a checkpoint, whatever its family."""

    architecture: str
    hidden_size: int
    num_hidden_layers: int

    @property
    def max_tokens(self) -> int:
        """Longest input (special tokens included) the model allows."""
        ...


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs (fixed for the life of a Reranker)."""

    device: torch.device
    dtype: torch.dtype
    backend: str = "torch"
    quantize: str | None = None
    devices: list[torch.device] | None = None
    #: torch.compile where it pays (the decoders' int8 layers on the CPU); off in the
    #: deterministic mode
    compile: bool = True


@dataclass
class Scoring:
    """What the engine needs to score pairs with one set of :class:`ScoreOptions`."""

    tokenizer: PairEncoding
    backend: Backend
    #: id that fills padded positions
    pad_id: int
    #: what each score column is: ``("score",)``, or one name per cutoff layer
    outputs: tuple[str, ...] = ("score",)
    #: the family's default padded-token budget on this device (None: the engine's default)
    default_max_tokens: int | None = None
    #: values the options resolved to (e.g. the cutoff layers), for repr and reports
    resolved: dict[str, Any] = field(default_factory=dict)


class LoadedModel(Protocol):
    """A family's model, loaded once; cheap to turn into a :class:`Scoring` per option set."""

    #: our PyTorch model, or None when another runtime computes the scores (ONNX)
    model: torch.nn.Module | None

    def scoring(self, options: ScoreOptions) -> Scoring:
        """Tokenizer and backend for these options (the weights are shared, never copied)."""
        ...


class Family(Protocol):
    """A family of checkpoints: see the module docstring."""

    #: registry key ("encoder", "gemma", ...)
    name: str
    #: ``config.json`` architectures this family runs
    architectures: tuple[str, ...]
    #: the entries of :data:`FAMILY_OPTIONS` this family honours
    options: frozenset[str]
    #: the backends it runs on (``backend="auto"`` picks among them)
    backends: tuple[str, ...]
    #: the quantizations its ``backend="torch"`` runs (``("int8",)`` for the decoders: int8
    #: products on the CPU); ``backend="auto"`` measures them too
    torch_quantize: tuple[str, ...]
    #: one line: what a score is for this family
    score: str
    #: parsed config -> how its model is exported to ONNX (the padded forward pass beside the
    #: model in :mod:`crossrank.models`); None: the family has no export
    onnx_export: Callable[[Any], OnnxExport] | None
    #: ``(init_dir, load_dir, settings, device)`` -> its training task
    #: (:class:`~crossrank.families.training.TrainTask`); None: the family is not trained
    train_task: Callable[[Path, Path, TrainSettings, torch.device], TrainTask] | None

    def claims(self, raw: dict[str, Any]) -> bool:
        """True when this family runs the checkpoint whose config.json is ``raw``."""
        ...

    def parse_config(self, raw: dict[str, Any]) -> ModelConfig:
        """The typed config (raises :class:`~crossrank.errors.ModelLoadError` when unusable)."""
        ...

    def load(self, model_dir: Path, config: Any, runtime: Runtime) -> LoadedModel:
        """Load the model and tokenizer of ``model_dir`` for ``runtime``."""
        ...


def claims_by_architecture(family: Family, raw: dict[str, Any]) -> bool:
    """The usual :meth:`Family.claims`: config.json lists one of the family's architectures."""
    archs: Sequence[str] = raw.get("architectures") or []
    return any(a in family.architectures for a in archs)


def check_options(family: Family, model_name: str, given: dict[str, Any]) -> None:
    """Raise a :class:`~crossrank.errors.CrossrankError` naming every option of
    :data:`FAMILY_OPTIONS` set in ``given`` that ``family`` does not honour (other options of
    ``given`` are left alone)."""
    refused = sorted(
        k
        for k, v in given.items()
        if k in FAMILY_OPTIONS
        and k not in family.options
        and v is not None
        and v != FAMILY_OPTIONS[k]
        and not (k == "backend" and v == "auto")  # auto resolves to what the family runs
    )
    if refused:
        shown = ", ".join(f"{k}={given[k]!r}" for k in refused)
        raise CrossrankError(f"{shown}: not supported by the {family.name} family of {model_name}")
