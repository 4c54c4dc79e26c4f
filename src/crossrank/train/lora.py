"""LoRA for our decoders, written in PEFT's layout.

A few lines of our own rather than the ``peft`` package: our decoders are not transformers
models (``peft.get_peft_model`` wants a ``PretrainedConfig``-like config and would rename every
base tensor to ``base_layer``), the trainer needs exactly three things (wrap the target
linears, save, merge), and scoring should not need ``peft`` installed. The saved format is
PEFT's own, so ``peft.PeftModel.from_pretrained`` reads our adapters and
:func:`crossrank.models.adapters.apply_adapter` reads PEFT's (both tested against ``peft``):

- ``adapter_config.json``: ``peft_type LORA``, ``r``, ``lora_alpha``, ``lora_dropout``,
  ``target_modules``, ``modules_to_save``, ``base_model_name_or_path`` ...
- ``adapter_model.safetensors``: ``base_model.model.<module>.lora_A.weight`` ``[r, in]`` and
  ``.lora_B.weight`` ``[out, r]`` for each adapted linear (Hugging Face module names, which
  ours are), plus ``base_model.model.<module>.weight`` for each fully trained extra module.

The adapted linear computes ``W x + b + (alpha / r) * B A dropout(x)``; ``A`` is initialised
as PEFT does (Kaiming-uniform), ``B`` at zero, both in fp32 whatever the frozen base's dtype.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from crossrank.errors import CrossrankError

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


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


def _matches(name: str, targets: Sequence[str]) -> bool:
    """PEFT's rule for a list of names: the module name equals or ends with ``.target``."""
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
        if _matches(name, target_modules) and type(module) is nn.Linear:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, child, LoRALinear(module, rank, alpha, dropout))
            wrapped.append(name)
    if not wrapped:
        raise CrossrankError(f"--target-modules {' '.join(target_modules)}: no linear matches")
    extra = [
        n for n, _ in model.named_modules() if extra_parameters and _matches(n, extra_parameters)
    ]
    if extra_parameters and not extra:
        raise CrossrankError(
            f"--lora-extra-parameters {' '.join(extra_parameters)}: no module matches"
        )
    for name in extra:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return wrapped


def adapter_state(
    model: nn.Module, extra_parameters: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's names."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{PREFIX}{name}.lora_A.weight"] = module.lora_A.weight
            out[f"{PREFIX}{name}.lora_B.weight"] = module.lora_B.weight
        elif extra_parameters and _matches(name, extra_parameters):
            for pname, p in module.named_parameters():
                out[f"{PREFIX}{name}.{pname}"] = p
    return {k: v.detach().contiguous() for k, v in out.items()}


def adapter_config(
    *,
    base: str,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str],
    extra_parameters: Sequence[str],
) -> dict:
    """``adapter_config.json`` as PEFT writes it for a LoRA adapter."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(target_modules),
        "modules_to_save": list(extra_parameters) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def save_adapter(model: nn.Module, dest: Path, config: dict) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors`` into ``dest``."""
    from crossrank.models.weights import save_safetensors

    state = adapter_state(model, config.get("modules_to_save") or ())
    save_safetensors(state, dest / WEIGHTS_FILE)
    (dest / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter_state(model: nn.Module, adapter_dir: Path) -> None:
    """Put a saved adapter's tensors back into a model prepared by :func:`add_lora` (resume)."""
    from safetensors.torch import load_file

    state = load_file(str(adapter_dir / WEIGHTS_FILE))
    params = dict(model.named_parameters())
    for key, tensor in state.items():
        name = key.removeprefix(PREFIX)
        if name not in params:
            raise CrossrankError(f"{adapter_dir}: adapter tensor {key} has no place in the model")
        with torch.no_grad():
            params[name].copy_(tensor)


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA update merged into its base weight."""
    state = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.merged_weight()
    return state
