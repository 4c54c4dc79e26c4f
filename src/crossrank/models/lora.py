"""LoRA on our decoders: :class:`LoRALinear`, :func:`add_lora` (wrap the target linears for
training), :func:`merged_state`. The files (PEFT's layout) are :mod:`crossrank.models.adapters`.

A few lines of our own rather than the ``peft`` package: our decoders are not transformers
models (``peft.get_peft_model`` wants a ``PretrainedConfig``-like config and would rename every
base tensor to ``base_layer``), the trainer needs exactly three things (wrap the target
linears, save, merge), and scoring should not need ``peft`` installed.

The adapted linear computes ``W x + b + (alpha / r) * B A dropout(x)``; ``A`` is initialised
as PEFT does (Kaiming-uniform), ``B`` at zero, both in fp32 whatever the frozen base's dtype.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossrank.errors import CrossrankError


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` (same parameter names, frozen) plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        dev = base.weight.device
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=dev)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=dev)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        dx = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        return y + (self.lora_B(self.lora_A(dx)) * self.scaling).to(y.dtype)

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A`` in W's dtype (computed in fp32)."""
        delta = self.lora_B.weight.float() @ self.lora_A.weight.float() * self.scaling
        return (self.weight.float() + delta).to(self.weight.dtype)


def matches_target(name: str, targets: str | Sequence[str]) -> bool:
    """PEFT's ``target_modules`` rule: a string is a regular expression the whole module name
    matches; a list names modules whose name equals or ends with ``.target``."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def add_lora(
    model: nn.Module,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str],
    extra_parameters: Sequence[str] = (),
) -> list[str]:
    """Freeze ``model``, wrap the target linears, unfreeze the extra modules (in their dtype).

    Returns the adapted module names. Raises :class:`CrossrankError` when nothing matches.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        if matches_target(name, target_modules) and type(module) is nn.Linear:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, child, LoRALinear(module, rank, alpha, dropout))
            wrapped.append(name)
    if not wrapped:
        raise CrossrankError(f"--target-modules {' '.join(target_modules)}: no linear matches")
    extra = [
        n
        for n, _ in model.named_modules()
        if extra_parameters and matches_target(n, extra_parameters)
    ]
    if extra_parameters and not extra:
        raise CrossrankError(
            f"--lora-extra-parameters {' '.join(extra_parameters)}: no module matches"
        )
    for name in extra:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return wrapped


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA update merged into its base weight."""
    state = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.merged_weight()
    return state
