"""ONNX Runtime backend: our CrossEncoder exported to ONNX, optimised, optionally int8-quantized
(ModernBERT cross-encoders have their own export: :mod:`crossrank.engine.onnx_modernbert`).

The export runs the same math as :class:`~crossrank.models.encoder.CrossEncoder` on the padded
batch (the packed-token layout uses data-dependent shapes that ONNX graphs handle poorly):
separate query / key / value products, an additive attention mask, and explicit softmax
attention, which is the pattern ONNX Runtime's transformer optimizer fuses into its
``Attention``, ``SkipLayerNormalization`` and ``BiasGelu`` kernels. ``quantize="int8"`` then
applies dynamic int8 quantization to the matrix products (int8 weights; uint8 activations,
quantized per batch in the attention block and per token in the feed-forward block).

Exported files are cached under ``$CROSSRANK_CACHE/onnx`` (default ``~/.cache/crossrank/onnx``)
in a directory named by a hash of the checkpoint's content (config.json and weight files) and
the export options: built once, reused by later loads, and rebuilt when the checkpoint
changes (its content hash changes). A build happens in a private temporary directory that is
renamed into place when complete, under a file lock, so concurrent first uses neither corrupt
the cache nor export twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossrank.engine.batching import TokenBatch
from crossrank.errors import missing_extra

logger = logging.getLogger(__name__)

#: bump when the exported graph or the optimisation recipe changes (invalidates the cache)
EXPORT_VERSION = 4
OPSET = 17


def cache_root() -> Path:
    """Where exported models live: ``$CROSSRANK_CACHE/onnx`` or ``~/.cache/crossrank/onnx``."""
    base = os.environ.get("CROSSRANK_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "crossrank"
    return root / "onnx"


def checkpoint_hash(model_dir: Path) -> str:
    """SHA-256 over config.json and the weight files (names and bytes)."""
    from crossrank.models.weights import weight_files

    h = hashlib.sha256()
    for path in [model_dir / "config.json", *weight_files(model_dir)]:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_key(model_dir: Path, quantize: str | None) -> str:
    import onnxruntime

    options = f"v{EXPORT_VERSION}-opset{OPSET}-ort{onnxruntime.__version__}-q{quantize or 'none'}"
    digest = hashlib.sha256(f"{checkpoint_hash(model_dir)}|{options}".encode()).hexdigest()
    return f"{digest[:24]}-{quantize or 'fp32'}"


class PaddedCrossEncoder(nn.Module):
    """The CrossEncoder's math on a padded batch, in the form ONNX Runtime's optimizer fuses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.config = model.config
        self.embeddings = model.encoder.embeddings
        self.layers = model.encoder.layers
        self.head = model.head
        h = self.config.hidden_size
        self.q, self.k, self.v = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for layer in self.layers:
            for i, part in enumerate((self.q, self.k, self.v)):
                lin = nn.Linear(h, h)
                with torch.no_grad():
                    lin.weight.copy_(layer.qkv.weight[i * h : (i + 1) * h])
                    lin.bias.copy_(layer.qkv.bias[i * h : (i + 1) * h])
                part.append(lin)
        heads, d = self.config.num_attention_heads, self.config.head_dim
        self.tail = FirstTokenTail(self.layers[-1], self.q[-1], heads, d)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t = input_ids.shape
        heads, d = self.config.num_attention_heads, self.config.head_dim
        x = self.embeddings(input_ids, attention_mask, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        scale = math.sqrt(d)
        last = len(self.layers) - 1
        for i, (layer, q, k, v) in enumerate(zip(self.layers, self.q, self.k, self.v)):

            def split(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, -1, heads, d).permute(0, 2, 1, 3)

            keys, values = split(k(x)).transpose(-1, -2), split(v(x))
            if i == last:  # queries and everything after attention: first token only
                x = self.tail(x[:, :1], keys, values, bias)
                break
            probs = torch.softmax(torch.matmul(split(q(x)), keys) / scale + bias, dim=-1)
            ctx = torch.matmul(probs, values).permute(0, 2, 1, 3).reshape(b, t, heads * d)
            x = layer.attn_norm(x + layer.attn_out(ctx))
            x = layer.ffn_norm(x + layer.ffn_out(layer.act(layer.ffn_in(x))))
        return self.head(x[:, 0]).squeeze(-1)


class FirstTokenTail(nn.Module):
    """The last layer from its query projection on, for the first token of each sequence:
    the only row the classification head reads. Its graph nodes are named ``/tail/...``."""

    def __init__(self, layer: nn.Module, q: nn.Linear, heads: int, head_dim: int) -> None:
        super().__init__()
        self.layer, self.q = layer, q
        self.heads, self.head_dim = heads, head_dim

    def forward(self, first, keys, values, bias):
        b = first.shape[0]
        query = self.q(first).view(b, 1, self.heads, self.head_dim).permute(0, 2, 1, 3)
        scores = torch.matmul(query, keys) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + bias, dim=-1)
        ctx = torch.matmul(probs, values).permute(0, 2, 1, 3).reshape(b, 1, -1)
        layer = self.layer
        x = layer.attn_norm(first + layer.attn_out(ctx))
        return layer.ffn_norm(x + layer.ffn_out(layer.act(layer.ffn_in(x))))


def export_onnx(model: nn.Module, path: Path, with_types: bool) -> None:
    """Export our model (fp32, CPU) to ``path`` with dynamic batch and sequence axes."""
    import warnings

    padded = PaddedCrossEncoder(model.float().cpu().eval()).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 5, 6, 2, 1]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.long)
    args: tuple = (ids, mask)
    names = ["input_ids", "attention_mask"]
    if with_types:
        args = (ids, mask, torch.zeros_like(ids))
        names.append("token_type_ids")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            padded,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def optimize(src: Path, dst: Path, config) -> None:
    """ONNX Runtime's transformer fusions (attention, skip-LayerNorm, bias-GELU)."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    fused = opt.get_fused_operator_statistics()
    logger.info("ONNX Runtime fusions: %s", {k: v for k, v in fused.items() if v})
    opt.save_model_to_file(str(dst), use_external_data_format=_large(opt.model))


def _large(model) -> bool:
    return model.ByteSize() > 1_800_000_000


#: matrix products whose input is quantized per token (row) rather than per batch: the
#: feed-forward block's, whose inputs (LayerNorm output, GELU output) vary most between tokens
PER_TOKEN = ("/ffn_in", "/ffn_out")


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of the encoder's matrix products, int8 weights per output
    channel. Activations: the attention block's products (ONNX Runtime's ``QAttention`` and
    ``DynamicQuantizeMatMul``) quantize their input with one scale per batch; the feed-forward
    products quantize it per token (:func:`per_token_matmuls`), which keeps one outlier token
    from coarsening the grid of every other token in the batch.

    The classification head and the last layer's first-token tail stay fp32: they run on one
    token per pair (no measurable time) and their error would go straight into the scores. So
    do the embeddings (a table lookup plus LayerNorm, nothing to gain from int8)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = onnx.load(str(src), load_external_data=False).graph.node
    keep_fp32 = [
        n.name
        for n in nodes
        if n.name.startswith(("/head/", "/tail/")) or n.op_type == "EmbedLayerNormalization"
    ]
    per_token = [n.name for n in nodes if n.op_type == "MatMul" and n.name.startswith(PER_TOKEN)]
    external = src.with_suffix(".onnx.data").exists()
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep_fp32 + per_token,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        use_external_data_format=external,
    )
    model = onnx.load(str(dst))
    per_token_matmuls(model, set(per_token))
    for f in dst.parent.glob(dst.name + "*"):
        f.unlink()
    onnx.save(model, str(dst), save_as_external_data=_large(model))


def per_token_matmuls(model, names: set[str]) -> None:
    """Replace the fp32 ``MatMul`` nodes named in ``names`` (input ``x``, constant weight ``W``)
    by an int8 product with one activation scale per row of ``x``:

        m = max(|x|) over the last axis                       (one scale per token)
        q = QuantizeLinear(x / m, 1/127, 128)                 (uint8, symmetric around 128)
        y = MatMulIntegerToFloat(q, Wq, 1/127, w_scale, 128) * m

    ``Wq`` is ``W`` quantized to int8 with one scale per output column. ONNX Runtime's kernels
    take a single activation scale and zero point per call, so the per-row scale is applied to
    the input before and to the output after the integer product."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = {
        "pt_step": np.array(1.0 / 127.0, np.float32),
        "pt_tiny": np.array(1e-30, np.float32),
        "pt_zp": np.array(128, np.uint8),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    out: list = []
    for node in graph.node:
        if node.name not in names:
            out.append(node)
            continue
        x, w_name = node.input
        (y,) = node.output
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
        wq = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        p = node.name.rsplit("/", 1)[0] + "/pt_"
        graph.initializer.remove(inits[w_name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(wq, p + "weight_q"),
                numpy_helper.from_array(w_scale.astype(np.float32), p + "weight_scale"),
            ]
        )
        out += [
            helper.make_node("Abs", [x], [p + "abs"], name=p + "abs"),
            helper.make_node("ReduceMax", [p + "abs"], [p + "m"], name=p + "m", axes=[-1]),
            helper.make_node("Max", [p + "m", "pt_tiny"], [p + "absmax"], name=p + "absmax"),
            helper.make_node("Div", [x, p + "absmax"], [p + "x_unit"], name=p + "x_unit"),
            helper.make_node(
                "QuantizeLinear", [p + "x_unit", "pt_step", "pt_zp"], [p + "x_q"], name=p + "x_q"
            ),
            helper.make_node(
                "MatMulIntegerToFloat",
                [p + "x_q", p + "weight_q", "pt_step", p + "weight_scale", "pt_zp"],
                [p + "y_unit"],
                name=p + "matmul",
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [p + "y_unit", p + "absmax"], [y], name=p + "rescale"),
        ]
    del graph.node[:]
    graph.node.extend(out)


def build(model_dir: Path, load_model: Callable[[], nn.Module], quantize: str | None, out: Path):
    """Export, optimise and (optionally) quantize into the empty directory ``out``."""
    from crossrank.config import EncoderConfig, read_config
    from crossrank.models.modernbert import ARCHITECTURES as MODERNBERT

    raw = read_config(model_dir / "config.json")
    t0 = time.perf_counter()
    final = out / "optimized.onnx"
    if any(a in MODERNBERT for a in raw.get("architectures") or []):
        # its own padded graph; ONNX Runtime's BERT fusions do not match it
        from crossrank.engine.onnx_modernbert import export_modernbert

        with_types = False
        export_modernbert(load_model(), final, OPSET)
    else:
        config = EncoderConfig.from_dict(raw)
        with_types = config.type_vocab_size > 1
        export_onnx(load_model(), out / "exported.onnx", with_types=with_types)
        optimize(out / "exported.onnx", final, config)
    if quantize == "int8":
        quantize_int8(final, out / "int8.onnx")
        final = out / "int8.onnx"
    for f in out.iterdir():
        if f.name != final.name and not f.name.startswith(final.name):
            f.unlink()
    final.rename(out / "model.onnx")
    meta = {
        "checkpoint": str(model_dir),
        "quantize": quantize,
        "with_types": with_types,
        "export_version": EXPORT_VERSION,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


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
    model_dir: Path, load_model: Callable[[], nn.Module], quantize: str | None
) -> Path:
    """The cached ONNX file for this checkpoint and options, exporting it on first use."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(Path(model_dir), quantize)
    final = root / key
    if (final / "meta.json").is_file():
        return final / "model.onnx"
    with _locked(root / f"{key}.lock"):
        if (final / "meta.json").is_file():  # another process built it while we waited
            return final / "model.onnx"
        logger.info("exporting %s to ONNX (%s) in %s", model_dir, quantize or "fp32", final)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=root))
        try:
            build(Path(model_dir), load_model, quantize, tmp)
            if final.exists():  # an incomplete leftover (no meta.json): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.onnx"


class OnnxBackend:
    """Scores token batches with an ONNX Runtime session on the CPU."""

    name = "onnx"
    n_outputs = 1
    #: no PyTorch model: ONNX Runtime computes the scores
    model = None
    device = torch.device("cpu")

    def __init__(self, path: str | Path, *, quantize: str | None = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_extra("onnx", "onnxruntime") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.path = Path(path)
        self.quantize = quantize
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    @classmethod
    def from_checkpoint(
        cls,
        model_dir: str | Path,
        load_model: Callable[[], nn.Module],
        *,
        quantize: str | None = None,
    ) -> OnnxBackend:
        """The backend for a checkpoint directory, exporting through the on-disk cache."""
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise missing_extra("onnx", exc.name or "onnxruntime") from None
        return cls(cached_model(Path(model_dir), load_model, quantize), quantize=quantize)

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        return 1

    def score(self, batch: TokenBatch) -> np.ndarray:
        feed = {
            "input_ids": batch.input_ids.numpy(),
            "attention_mask": batch.attention_mask.numpy(),
        }
        if "token_type_ids" in self.inputs:
            types = batch.token_type_ids
            feed["token_type_ids"] = (
                types.numpy() if types is not None else np.zeros_like(feed["input_ids"])
            )
        (logits,) = self.session.run(["logits"], feed)
        return np.asarray(logits, dtype=np.float32).reshape(-1)
