"""Resolve a model argument (local directory, Hugging Face hub id, or a bundled model's name)
to a local directory.

The bundled model, ``crossrank/minilm-debian``, works offline and reads English only (an
English vocabulary, trained on English Debian package descriptions); for other languages use
a multilingual model such as the default, ``BAAI/bge-reranker-v2-m3``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crossrank.bundled import LANGUAGES, bundled_model_dir
from crossrank.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: the model of the library, the CLI and the server when none is named
DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"
#: the small model shipped with crossrank, which needs no network (English only)
BUNDLED_MODEL = "crossrank/minilm-debian"
#: how the bundled model is offered: its name and its language
BUNDLED_OFFER = f"{BUNDLED_MODEL} ({LANGUAGES[BUNDLED_MODEL]})"

#: files a reranker checkpoint may need; weights in both formats, tokenizer, configs
_ALLOW = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "vocab.txt",
]


def cache_dir(name: str) -> Path:
    """crossrank's own cache directory ``name`` (``onnx`` exports, ``auto`` decisions, ``bm25``
    indexes): ``$CROSSRANK_CACHE/name``, else ``~/.cache/crossrank/name``."""
    base = os.environ.get("CROSSRANK_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "crossrank"
    return root / name


def is_local_reference(text: str) -> bool:
    """True when ``text`` can only mean a local directory (a path, never a hub id)."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or not text


def resolve_model_dir(model: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """Return a local directory holding the checkpoint ``model``.

    ``model`` is a directory (used as is) or a hub id such as ``BAAI/bge-reranker-v2-m3``,
    fetched through ``huggingface_hub`` into its usual cache (``HF_HOME`` / ``HF_HUB_CACHE``);
    with ``HF_HUB_OFFLINE=1`` only the cache is used.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory: it has no config.json")
        return path
    text = str(model)

    bundled = bundled_model_dir(text)
    if bundled is not None:
        return bundled
    if path.exists():
        raise ModelLoadError(f"{text} is a file; pass the checkpoint directory instead")
    if is_local_reference(text):
        raise ModelLoadError(f"model directory {text} does not exist")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(text, revision=revision, allow_patterns=_ALLOW)
    except Exception as exc:  # huggingface_hub raises many types: offline, 404, network, auth
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        how = (
            "unset HF_HUB_OFFLINE and retry with network access"
            if offline
            else "check the id and your network, or download it with "
            f"`huggingface-cli download {text}` and pass the directory"
        )
        if text == DEFAULT_MODEL:
            how += (
                f", or use the bundled offline model {BUNDLED_MODEL!r}, "
                f"{LANGUAGES[BUNDLED_MODEL]} (--model {BUNDLED_MODEL})"
            )
        raise ModelLoadError(
            f"model {text!r} is neither a local directory nor in the Hugging Face cache and "
            f"could not be downloaded ({type(exc).__name__}); {how}"
        ) from None
    local_path = Path(local)
    if not (local_path / "config.json").is_file():
        raise ModelLoadError(f"hub repository {text!r} has no config.json")
    if not any(local_path.glob("*.safetensors")):
        # older repos ship only pytorch_model.bin
        snapshot_download(text, revision=revision, allow_patterns=["pytorch_model*.bin*"])
    return local_path
