"""The on-disk cache of exported ONNX models.

Exported files are cached under ``$CROSSRANK_CACHE/onnx`` (default ``~/.cache/crossrank/onnx``)
in a directory named by a hash of the checkpoint's content (config.json and weight files) and
the export options (for int8, the product format this CPU computes exactly:
:func:`crossrank.cpu.int8_scheme`): built once, reused by later loads, and rebuilt when the checkpoint
changes (its content hash changes). A build fills a temporary directory that is renamed into
place when complete (:func:`crossrank.atomic.atomic_dir`), under a file lock, so concurrent
first uses neither corrupt the cache nor export twice, and a killed build leaves nothing
under the entry's name (its temporary is removed by the next build).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from crossrank.atomic import atomic_dir
from crossrank.cpu import int8_scheme
from crossrank.engine.onnx_export import EXPORT_VERSION, OPSET, OnnxExport, build
from crossrank.hub import cache_dir
from crossrank.models.weights import weight_files

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where exported models live: ``$CROSSRANK_CACHE/onnx`` or ``~/.cache/crossrank/onnx``."""
    return cache_dir("onnx")


def checkpoint_hash(model_dir: Path) -> str:
    """SHA-256 over config.json and the weight files (names and bytes). Read once per process
    while the files keep their size and modification time (``backend="auto"`` loads every ONNX
    and OpenVINO candidate of the same checkpoint)."""
    files = [model_dir / "config.json", *weight_files(model_dir)]
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _content_hash(stamp)


@functools.lru_cache(maxsize=16)
def _content_hash(stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        path = Path(name)
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def variant(quantize: str | None, scheme: str | None = None, *, plain: bool = False) -> str:
    """The cache entry's variant: ``fp32``, ``int8-u8s8`` / ``int8-u8u8`` (``scheme``: the
    int8 product format, default the one that is exact on this CPU), or ``plain`` (fp32
    without ONNX Runtime's fusions: what OpenVINO reads)."""
    if plain:
        return "plain"
    if quantize is None:
        return "fp32"
    return f"{quantize}-{scheme or int8_scheme()}"


def cache_key(
    model_dir: Path,
    quantize: str | None,
    scheme: str | None = None,
    *,
    checkpoint: str | None = None,
    plain: bool = False,
) -> str:
    """The entry's directory name; ``checkpoint``: :func:`checkpoint_hash` of ``model_dir``
    when the caller has it already (hashing reads every weight file)."""
    kind = variant(quantize, scheme, plain=plain)
    if plain:  # torch's exporter alone made it
        options = f"v{EXPORT_VERSION}-opset{OPSET}-torch{torch.__version__}-q{kind}"
    else:
        import onnxruntime

        options = f"v{EXPORT_VERSION}-opset{OPSET}-ort{onnxruntime.__version__}-q{kind}"
    checkpoint = checkpoint or checkpoint_hash(model_dir)
    digest = hashlib.sha256(f"{checkpoint}|{options}".encode()).hexdigest()
    return f"{digest[:24]}-{kind}"


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_model(
    model_dir: Path,
    load_model: Callable[[], nn.Module],
    export: OnnxExport,
    quantize: str | None,
    *,
    plain: bool = False,
) -> Path:
    """The cached ONNX file for this checkpoint and options, exporting it on first use (the
    family's ``export`` of ``load_model()``). An int8 entry is quantized from the fp32
    entry of the same checkpoint where that exists (``backend="auto"`` builds fp32 first),
    instead of exporting again. ``plain``: the export without ONNX Runtime's fusions (for
    OpenVINO)."""
    if plain and quantize is not None:
        raise ValueError("a plain export is fp32")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    scheme = int8_scheme() if quantize is not None else None
    checkpoint = checkpoint_hash(Path(model_dir))
    key = cache_key(Path(model_dir), quantize, scheme, checkpoint=checkpoint, plain=plain)
    final = root / key
    if (final / "meta.json").is_file():
        return final / "model.onnx"
    with _locked(root / f"{key}.lock"):
        if (final / "meta.json").is_file():  # another process built it while we waited
            return final / "model.onnx"
        source = None
        if quantize is not None:
            fp32 = root / cache_key(Path(model_dir), None, checkpoint=checkpoint)
            if (fp32 / "meta.json").is_file():  # complete entries are never changed
                source = fp32 / "model.onnx"
        logger.info(
            "%s %s to ONNX (%s) in %s",
            "exporting" if source is None else "quantizing the fp32 export of",
            model_dir,
            variant(quantize, scheme, plain=plain),
            final,
        )
        if plain:
            export = replace(export, bert_fusions=None)
        # an incomplete leftover under the final name (no meta.json) is replaced
        atomic_dir(
            final,
            lambda tmp: build(
                Path(model_dir), load_model, export, quantize, tmp, scheme, source=source
            ),
        )
    return final / "model.onnx"
