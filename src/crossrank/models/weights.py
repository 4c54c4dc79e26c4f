"""Checkpoint I/O: Hugging Face tensor names <-> our module names, safetensors / .bin files,
and :func:`write_checkpoint`, the one writer of a model directory (training outputs, scripts)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from crossrank.atomic import atomic_path
from crossrank.config import EncoderConfig
from crossrank.errors import ModelLoadError

logger = logging.getLogger(__name__)

_PREFIXES = ("roberta.", "bert.", "xlm_roberta.", "model.")
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_QKV = ("query", "key", "value")
_IGNORED = ("embeddings.position_ids", "cls.", "lm_head.", "pooler.")


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a checkpoint directory (safetensors preferred, sharded or not)."""
    for pattern in ("model.safetensors", "model-*-of-*.safetensors", "*.safetensors"):
        files = sorted(model_dir.glob(pattern))
        if files:
            return files
    for pattern in ("pytorch_model.bin", "pytorch_model-*-of-*.bin"):
        files = sorted(model_dir.glob(pattern))
        if files:
            return files
    raise ModelLoadError(
        f"no weights in {model_dir}: expected model.safetensors or pytorch_model.bin"
    )


FIX = "re-download the model or save the checkpoint again"


def check_safetensors(path: Path) -> tuple[int, dict[str, Any]]:
    """Check a safetensors file's framing (header length, JSON header, data extent) so a
    truncated or corrupt file is one :class:`ModelLoadError` with the byte offset at fault;
    returns the header's length in bytes and the header."""
    import json

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(
                f"{path}: truncated safetensors file: it ends at byte {size}, inside the "
                f"8-byte header length; {FIX}"
            )
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            raise ModelLoadError(
                f"{path}: truncated or not a safetensors file: the header should span bytes "
                f"8-{8 + n}, but the file ends at byte {size}; {FIX}"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ModelLoadError(
            f"{path}: corrupt safetensors file: the header (bytes 8-{8 + n}) is not JSON; {FIX}"
        ) from None
    tensors = header.items() if isinstance(header, dict) else ()
    try:
        end = max((int(v["data_offsets"][1]) for k, v in tensors if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ModelLoadError(
            f"{path}: corrupt safetensors file: the header (bytes 8-{8 + n}) does not "
            f"describe tensors; {FIX}"
        ) from None
    if not isinstance(header, dict):
        raise ModelLoadError(
            f"{path}: corrupt safetensors file: the header is not an object; {FIX}"
        )
    if 8 + n + end > size:
        raise ModelLoadError(
            f"{path}: truncated safetensors file: the tensor data should end at byte "
            f"{8 + n + end}, but the file ends at byte {size}; {FIX}"
        )
    return n, header


#: safetensors dtype names -> torch dtypes (what :func:`_read_safetensors` reads)
_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def _read_safetensors(
    path: Path, n: int, header: dict[str, Any]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor of a safetensors file read into its own memory, in file order: no page of
    the file stays mapped into the process. ``n`` and ``header``: :func:`check_safetensors`'s."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    with open(path, "rb") as fh:
        for name, info in sorted(tensors.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            start, end = (int(x) for x in info["data_offsets"])
            dtype = _ST_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ModelLoadError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            fh.seek(8 + n + start)
            data = bytearray(end - start)
            if fh.readinto(data) != len(data):
                raise ModelLoadError(f"{path}: truncated safetensors file at tensor {name}; {FIX}")
            tensor = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            yield name, tensor.reshape(info["shape"])


def iter_tensors(files: list[Path], *, private: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` from weight files, one tensor at a time for safetensors.

    Safetensors files are mapped into memory (tensors share the file's pages, loaded lazily);
    with ``private`` each tensor is read into its own memory instead: for loads that turn
    every tensor into something else (another dtype, int8), so that the file's pages, once
    read, do not stay in the process's resident memory.

    Raises:
        ModelLoadError: a weight file is truncated or corrupt (naming the file and, for
            safetensors, the byte offset).
    """
    for path in files:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError, safe_open

            n, header = check_safetensors(path)
            if private:
                yield from _read_safetensors(path, n, header)
                continue
            try:
                with safe_open(str(path), framework="pt") as f:
                    for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                        yield name, f.get_tensor(name)
            except SafetensorError as exc:
                raise ModelLoadError(f"{path}: corrupt safetensors file ({exc}); {FIX}") from None
        else:
            import pickle
            import zipfile

            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ModelLoadError(
                    f"{path}: corrupt PyTorch weight file ({reason}); {FIX}"
                ) from None
            yield from state.items()


def hf_to_ours(name: str, config: EncoderConfig) -> tuple[str, int | None] | None:
    """Map one Hugging Face tensor name to ``(our name, qkv slot)``; None for unused tensors.

    The slot (0, 1, 2) says where a query / key / value tensor goes in the fused ``qkv``.
    """
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
        "LayerNorm.beta", "LayerNorm.bias"
    )
    if name.startswith("classifier."):
        rest = name[len("classifier.") :]
        if config.family == "bert":
            return f"head.out_proj.{rest}", None
        return f"head.{rest}", None  # dense.* / out_proj.*
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name.startswith("pooler.dense.") and config.family == "bert":
        return "head.dense." + name[len("pooler.dense.") :], None
    if name.startswith(_IGNORED):
        return None
    if name.startswith("embeddings."):
        return "encoder." + name, None
    m = _LAYER.match(name)
    if m is None:
        return None
    layer, rest = m.groups()
    for i, part in enumerate(_QKV):
        if rest.startswith(f"attention.self.{part}."):
            return f"encoder.layers.{layer}.qkv.{rest.rsplit('.', 1)[1]}", i
    for hf, ours in _LAYER_PARTS.items():
        if rest.startswith(hf + "."):
            return f"encoder.layers.{layer}.{ours}.{rest[len(hf) + 1 :]}", None
    return None


def convert_state_dict(
    tensors: Iterator[tuple[str, torch.Tensor]], config: EncoderConfig, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict from Hugging Face tensors (fusing q/k/v), plus the unused tensor names."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor | None]] = {}
    unused: list[str] = []
    for name, tensor in tensors:
        mapped = hf_to_ours(name, config)
        if mapped is None:
            if not name.endswith("position_ids"):
                unused.append(name)
            continue
        ours, slot = mapped
        tensor = tensor.to(dtype) if tensor.is_floating_point() else tensor
        if slot is None:
            out[ours] = tensor
        else:
            parts.setdefault(ours, [None, None, None])[slot] = tensor
    for ours, qkv in parts.items():
        if any(t is None for t in qkv):
            raise ModelLoadError(f"checkpoint has an incomplete query/key/value set for {ours}")
        out[ours] = torch.cat(qkv, dim=0)  # type: ignore[arg-type]
    return out, unused


def ours_to_hf(state: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """Hugging Face ``*ForSequenceClassification`` tensor names for our state dict."""
    base = "bert." if config.family == "bert" else "roberta."
    inv_parts = {v: k for k, v in _LAYER_PARTS.items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        if name.startswith("head."):
            part, kind = name[len("head.") :].split(".")
            if config.family == "bert":
                key = f"bert.pooler.dense.{kind}" if part == "dense" else f"classifier.{kind}"
            else:
                key = f"classifier.{part}.{kind}"
            out[key] = tensor
        elif name.startswith("encoder.embeddings."):
            out[base + name[len("encoder.") :]] = tensor
        elif name.startswith("encoder.layers."):
            _, _, layer, part, kind = name.split(".", 4)
            prefix = f"{base}encoder.layer.{layer}."
            if part == "qkv":
                for piece, chunk in zip(_QKV, tensor.chunk(3, dim=0)):
                    out[f"{prefix}attention.self.{piece}.{kind}"] = chunk.contiguous()
            else:
                out[f"{prefix}{inv_parts[part]}.{kind}"] = tensor
        else:
            raise KeyError(name)
    return out


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors to ``path`` atomically (:func:`crossrank.atomic.atomic_path`)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.cpu() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})


#: tokenizer files a written checkpoint carries over from the model it came from
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def write_checkpoint(
    dest: Path,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    *,
    dtype: torch.dtype | None = None,
    tokenizer_dir: Path | None = None,
) -> None:
    """Write a model directory in Hugging Face layout into the existing directory ``dest``.

    ``model.safetensors`` holds ``state`` (already under the checkpoint's tensor names), its
    floating tensors cast to ``dtype`` when given; ``config.json`` is ``config`` with
    ``torch_dtype`` set to the dtype the floats are saved in (sorted keys, two-space indent);
    the :data:`TOKENIZER_FILES` present in ``tokenizer_dir`` are copied. The directory is not
    written atomically: callers fill a temporary one
    (:func:`crossrank.atomic.atomic_dir` / :func:`~crossrank.atomic.atomic_files`).

    Example:
        >>> write_checkpoint(out, model.state_dict(), config.raw, tokenizer_dir=src)  # doctest: +SKIP
    """
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    raw = dict(config)
    saved = next((v.dtype for v in state.values() if v.is_floating_point()), None)
    if saved is not None:
        raw["torch_dtype"] = str(saved).removeprefix("torch.")
    save_safetensors(state, dest / "model.safetensors")
    (dest / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, dest)


def copy_tokenizer_files(src: Path, dest: Path) -> None:
    """Copy the :data:`TOKENIZER_FILES` present in ``src`` into ``dest`` (a checkpoint or an
    adapter directory)."""
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, dest / name)
