"""PEFT's LoRA adapter layout, the one module that reads and writes it: write an adapter
(training), put its tensors back (resume), find its base, check it and merge it in (scoring).

An adapter directory is PEFT's layout, written by ``crossrank train --lora-rank`` or by ``peft``
on a transformers model of the same checkpoint (both tested against ``peft``):

- ``adapter_config.json``: ``peft_type LORA``, ``r``, ``lora_alpha``, ``lora_dropout``,
  ``target_modules``, ``modules_to_save``, ``base_model_name_or_path`` ...
- ``adapter_model.safetensors`` (or ``adapter_model.bin``):
  ``base_model.model.<module>.lora_A.weight`` ``[r, in]`` and ``.lora_B.weight`` ``[out, r]``
  for each adapted linear (Hugging Face module names, which our decoders share), plus
  ``base_model.model.<module>.<parameter>`` for each fully trained extra module.

The configuration is checked against the tensors as PEFT checks it when it loads: an ``r``
(or ``rank_pattern`` entry) that is not the tensors' rank, a ``target_modules`` that names
linears the file has no tensors for, or tensors for linears it does not name, is a
:class:`~crossrank.errors.ModelLoadError` naming ``adapter_config.json``. Merging
``W += (alpha / r) B A`` (computed in fp32, stored in W's dtype) gives the scores of PEFT's
unmerged model, with no ``peft`` installed.

Example:
    >>> base = adapter_base("my-adapter")  # doctest: +SKIP
    >>> model = apply_adapter(load_decoder(resolve_model_dir(base)), "my-adapter")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrank.errors import CrossrankError, ModelLoadError, UnsupportedModelError
from crossrank.hub import is_local_reference, resolve_model_dir
from crossrank.models.decoder import DecoderLM
from crossrank.models.lora import LoRALinear, matches_target

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


def adapter_config(
    *,
    base: str,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str],
    extra_parameters: Sequence[str],
) -> dict[str, Any]:
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


def adapter_state(
    model: nn.Module, extra_parameters: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """The adapter's tensors of a model prepared by :func:`~crossrank.models.lora.add_lora`,
    under PEFT's names."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{PREFIX}{name}.lora_A.weight"] = module.lora_A.weight
            out[f"{PREFIX}{name}.lora_B.weight"] = module.lora_B.weight
        elif extra_parameters and matches_target(name, extra_parameters):
            for pname, p in module.named_parameters():
                out[f"{PREFIX}{name}.{pname}"] = p
    return {k: v.detach().contiguous() for k, v in out.items()}


def save_adapter(model: nn.Module, dest: Path, config: dict[str, Any]) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors`` into ``dest``."""
    from crossrank.models.weights import save_safetensors

    state = adapter_state(model, config.get("modules_to_save") or ())
    save_safetensors(state, dest / WEIGHTS_FILE)
    (dest / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter_state(model: nn.Module, adapter_dir: Path) -> None:
    """Put a saved adapter's tensors back into a model prepared by
    :func:`~crossrank.models.lora.add_lora` (resume)."""
    state = _load_tensors(adapter_dir)
    params = dict(model.named_parameters())
    for key, tensor in state.items():
        name = key.removeprefix(PREFIX)
        if name not in params:
            raise CrossrankError(f"{adapter_dir}: adapter tensor {key} has no place in the model")
        with torch.no_grad():
            params[name].copy_(tensor)


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
        name = key.removeprefix(PREFIX)
        m = re.match(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", name)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = tensor
            continue
        if "lora_" in name:
            raise UnsupportedModelError(f"{adapter_dir}: adapter tensor {key} is not supported")
        if name not in params:
            raise ModelLoadError(f"{adapter_dir}: adapter tensor {key} has no place in the model")
        _copy(params[name], tensor, key, adapter_dir)
    _check_targets(model, config, pairs, adapter_dir / CONFIG_FILE)
    for module_name, ab in pairs.items():
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


def _check_targets(
    model: nn.Module, config: dict[str, Any], pairs: dict[str, dict[str, torch.Tensor]], where: Path
) -> None:
    """What PEFT checks when it loads: every LoRA pair is whole and of the configured rank
    (``r``, or its ``rank_pattern`` entry), and ``target_modules`` names exactly the linears
    the file has pairs for (within ``layers_to_transform``; ``all-linear`` is not checked)."""
    rank = config.get("r")
    for module_name, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ModelLoadError(f"{where.parent}: {module_name} lacks lora_A or lora_B")
        want = _pattern_value(module_name, config.get("rank_pattern") or {}, rank)
        got = (ab["A"].shape[0], ab["B"].shape[-1])
        if want is not None and got != (want, want):
            raise ModelLoadError(
                f"{where}: r is {want} for {module_name}, but its lora_A / lora_B tensors have "
                f"rank {got[0]} / {got[1]}"
            )
    targets = config.get("target_modules")
    if targets is None or targets == "all-linear":
        return
    if not isinstance(targets, str):
        targets = list(targets)
    layers = config.get("layers_to_transform")
    layers = {layers} if isinstance(layers, int) else set(layers or ())
    named = {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and matches_target(name, targets)
        and (not layers or _layer_index(name, config.get("layers_pattern")) in layers)
    }
    for what, names in (
        ("names linears the adapter has no tensors for", sorted(named - set(pairs))),
        ("does not name linears the adapter has tensors for", sorted(set(pairs) - named)),
    ):
        if names:
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            raise ModelLoadError(f"{where}: target_modules {targets!r} {what}: {shown}")


def _layer_index(name: str, pattern: str | list[str] | None) -> int | None:
    """The layer number in a module name (PEFT's ``layers_pattern``, default the usual ones)."""
    words = [pattern] if isinstance(pattern, str) else pattern or ["layers", "h", "blocks", "layer"]
    m = re.search(rf"(?:^|\.)(?:{'|'.join(map(re.escape, words))})\.(\d+)\.", name)
    return int(m.group(1)) if m else None


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
    from crossrank.models.int8 import Int8Linear

    if any(isinstance(m, Int8Linear) for m in model.modules()):
        raise CrossrankError(
            "a LoRA adapter cannot load onto int8 layers: merge it into the base first "
            "(crossrank train --merge) or drop quantize='int8'"
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
    adapter_dir = Path(model).expanduser()
    if not is_adapter_dir(adapter_dir):
        return model, None
    base = adapter_base(adapter_dir)
    if is_local_reference(base) and not Path(base).expanduser().is_dir():
        raise ModelLoadError(
            f"{adapter_dir / CONFIG_FILE}: its base model {base!r} (base_model_name_or_path) "
            "does not exist; pass the base with model= and this directory with adapter="
        )
    return base, adapter_dir


def check_model_argument(model: str | os.PathLike[str]) -> Path:
    """The local checkpoint directory behind a ``--model`` argument that may also be an adapter
    directory (its base is resolved then), so a CLI can fail on a wrong model before doing
    any work. Raises :class:`~crossrank.errors.ModelLoadError` as the loader would."""
    base, _ = split_adapter(model, None)
    return resolve_model_dir(base)
