"""PEFT LoRA adapters on our models: find an adapter's base, merge its weights in.

An adapter directory is PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``
or ``adapter_model.bin``), written by ``crossrank train --lora-rank`` or by ``peft`` on a
transformers model of the same checkpoint: tensor names are Hugging Face module names, which
our decoders share. Merging ``W += (alpha / r) B A`` (computed in fp32, stored in W's dtype)
gives the scores of PEFT's unmerged model, with no ``peft`` installed.

Example:
    >>> base = adapter_base("my-adapter")  # doctest: +SKIP
    >>> model = apply_adapter(load_decoder(resolve_model_dir(base)), "my-adapter")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrank.errors import CrossrankError, ModelLoadError, UnsupportedModelError
from crossrank.hub import resolve_model_dir
from crossrank.models.decoder import DecoderLM

CONFIG_FILE = "adapter_config.json"
_PREFIX = "base_model.model."


def is_adapter_dir(path: str | Path) -> bool:
    """True for a PEFT adapter directory (``adapter_config.json``, no ``config.json``)."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and not (p / "config.json").is_file()


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return raw


def adapter_base(adapter_dir: str | Path) -> str:
    """The ``base_model_name_or_path`` an adapter was trained on (hub id or directory)."""
    base = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ModelLoadError(
            f"{Path(adapter_dir) / CONFIG_FILE} names no base_model_name_or_path; load the base "
            "model and pass the adapter to it"
        )
    return base


def _check(config: dict[str, Any], where: Path) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedModelError(f"{where}: only LoRA adapters are supported")
    for key, bad in (("use_dora", True), ("fan_in_fan_out", True)):
        if config.get(key) == bad:
            raise UnsupportedModelError(f"{where}: LoRA with {key}=true is not supported")
    if config.get("bias", "none") != "none":
        raise UnsupportedModelError(f"{where}: LoRA bias={config['bias']!r} is not supported")


def _load_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    st, pt = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"
    try:
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(str(st))
        if pt.is_file():
            return torch.load(str(pt), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / torch raise various types on corrupt files
        raise ModelLoadError(f"cannot read the adapter weights in {adapter_dir}: {exc}") from None
    raise ModelLoadError(f"{adapter_dir} has no adapter_model.safetensors or adapter_model.bin")


def _pattern_value(name: str, patterns: dict[str, Any], default: Any) -> Any:
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: a key matching the module name's end."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", name):
            return value
    return default


@torch.no_grad()
def apply_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Merge a PEFT LoRA adapter into ``model`` in place (and return it).

    LoRA pairs are merged into their linear's weight; other tensors of the adapter (PEFT's
    ``modules_to_save``, e.g. layerwise heads trained in full) replace the model's.
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    _check(config, adapter_dir / CONFIG_FILE)
    tensors = _load_tensors(adapter_dir)
    params = dict(model.named_parameters())
    alpha = float(config.get("lora_alpha", 8))
    rslora = bool(config.get("use_rslora", False))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(_PREFIX)
        m = re.match(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", name)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = tensor
            continue
        if "lora_" in name:
            raise UnsupportedModelError(f"{adapter_dir}: adapter tensor {key} is not supported")
        if name not in params:
            raise ModelLoadError(f"{adapter_dir}: adapter tensor {key} has no place in the model")
        _copy(params[name], tensor, key, adapter_dir)
    for module_name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ModelLoadError(f"{adapter_dir}: {module_name} lacks lora_A or lora_B")
        weight = params.get(module_name + ".weight")
        if weight is None:
            raise ModelLoadError(f"{adapter_dir}: no linear {module_name} in the model")
        a, b = ab["A"].float(), ab["B"].float()
        r = a.shape[0]
        mod_alpha = float(_pattern_value(module_name, config.get("alpha_pattern") or {}, alpha))
        scale = mod_alpha / math.sqrt(r) if rslora else mod_alpha / r
        delta = (b.to(weight.device) @ a.to(weight.device)) * scale
        if delta.shape != weight.shape:
            raise ModelLoadError(
                f"{adapter_dir}: LoRA update of {module_name} has shape {tuple(delta.shape)}, "
                f"the weight {tuple(weight.shape)}: was the adapter trained on another model?"
            )
        weight.copy_((weight.float() + delta).to(weight.dtype))
    return model


def _copy(param: torch.Tensor, tensor: torch.Tensor, key: str, where: Path) -> None:
    if param.shape != tensor.shape:
        raise ModelLoadError(
            f"{where}: adapter tensor {key} has shape {tuple(tensor.shape)}, "
            f"the model's {tuple(param.shape)}"
        )
    param.copy_(tensor.to(param.dtype))


def apply_adapter_to(
    model: nn.Module | None, adapter_dir: Path, *, backend: str, devices: list | None
) -> None:
    """:func:`apply_adapter` for a :class:`~crossrank.Reranker`'s loaded model, refusing the
    set-ups an adapter cannot join (another backend, a pool of devices, an encoder)."""
    if not isinstance(model, DecoderLM) or backend != "torch" or devices:
        raise CrossrankError(
            "LoRA adapters load onto LLM families with backend='torch' on one device"
        )
    apply_adapter(model, adapter_dir)


def split_adapter(
    model: str | os.PathLike[str], adapter: str | os.PathLike[str] | None
) -> tuple[str | os.PathLike[str], Path | None]:
    """``(base model, adapter directory or None)`` from a Reranker's ``model`` / ``adapter``
    arguments: ``model`` may itself be an adapter directory, whose base is read from its
    ``adapter_config.json`` (``base_model_name_or_path``)."""
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser()
        if not is_adapter_dir(adapter_dir):
            raise CrossrankError(f"adapter {adapter}: not a PEFT adapter directory")
        return model, adapter_dir
    if is_adapter_dir(Path(model).expanduser()):
        return adapter_base(Path(model).expanduser()), Path(model).expanduser()
    return model, None


def check_model_argument(model: str | os.PathLike[str]) -> Path:
    """The local checkpoint directory behind a ``--model`` argument that may also be an adapter
    directory (its base is resolved then), so a CLI can fail on a wrong model before doing
    any work. Raises :class:`~crossrank.errors.ModelLoadError` as the loader would."""
    base, _ = split_adapter(model, None)
    return resolve_model_dir(base)
