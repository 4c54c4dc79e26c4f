"""Dynamic int8 quantization of an exported cross-encoder (``quantize="int8"``).

8-bit weights; uint8 activations, quantized per batch in the attention block (ONNX Runtime's
own dynamic quantization) and per token in the feed-forward block (:func:`per_token_matmuls`).
The weights are int8 (``scheme="u8s8"``) where the CPU multiplies u8 x s8 exactly (VNNI, AMX,
ARM), and uint8 around a zero point of 128 (``"u8u8"``) on x86 CPUs without int8 dot-product
units, whose u8 x s8 kernel saturates (:func:`crossrank.cpu.int8_scheme`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: matrix products whose input is quantized per token (row) rather than per batch: the
#: feed-forward block's, whose inputs (LayerNorm output, GELU output) vary most between tokens
PER_TOKEN = ("/ffn_in", "/ffn_out")


#: the int8 product formats :func:`quantize_int8` writes (:func:`crossrank.cpu.int8_scheme`)
SCHEMES = ("u8s8", "u8u8")


def is_large(model) -> bool:
    """Whether an ONNX model must be saved with external data (the 2 GB protobuf limit)."""
    return model.ByteSize() > 1_800_000_000


def external_data(path: Path) -> bool:
    """Whether the ONNX model at ``path`` keeps its weights in a file beside the graph (a
    model over 2 GB), whatever that file is called."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)


def quantize_int8(src: Path, dst: Path, scheme: str = "u8s8") -> None:
    """Dynamic int8 quantization of the encoder's matrix products, 8-bit weights per output
    channel (int8 for ``scheme="u8s8"``, uint8 for ``"u8u8"``: :data:`SCHEMES`). Activations:
    the attention block's products (ONNX Runtime's ``QAttention`` and
    ``DynamicQuantizeMatMul``) quantize their input with one scale per batch; the feed-forward
    products quantize it per token (:func:`per_token_matmuls`), which keeps one outlier token
    from coarsening the grid of every other token in the batch.

    The classification head and the last layer's first-token tail stay fp32: they run on one
    token per pair (no measurable time) and their error would go straight into the scores. So
    do the embeddings (a table lookup plus LayerNorm, nothing to gain from int8)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if scheme not in SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; use one of {SCHEMES}")
    nodes = onnx.load(str(src), load_external_data=False).graph.node
    keep_fp32 = [
        n.name
        for n in nodes
        if n.name.startswith(("/head/", "/tail/")) or n.op_type == "EmbedLayerNormalization"
    ]
    per_token = [n.name for n in nodes if n.op_type == "MatMul" and n.name.startswith(PER_TOKEN)]
    external = external_data(src)
    with _quiet_root_logger():  # ONNX Runtime's quantizer warns on the root logger
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8 if scheme == "u8s8" else QuantType.QUInt8,
            per_channel=True,
            nodes_to_exclude=keep_fp32 + per_token,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            use_external_data_format=external,
        )
    model = onnx.load(str(dst))
    per_token_matmuls(model, set(per_token), signed_weights=scheme == "u8s8")
    for f in dst.parent.glob(dst.name + "*"):
        f.unlink()
    onnx.save(model, str(dst), save_as_external_data=is_large(model))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop the advice ONNX Runtime's quantizer logs on the root logger while it runs (a
    pre-processing suggestion, tensor-type notes): nothing a crossrank user can act on. A filter
    on the root logger sees only records logged on it directly (``logging.warning(...)``), so
    records of named loggers, from any thread, pass as before."""
    root = logging.getLogger()

    def not_quantizer(record: logging.LogRecord) -> bool:
        return "/onnxruntime/quantization/" not in record.pathname.replace("\\", "/")

    root.addFilter(not_quantizer)
    try:
        yield
    finally:
        root.removeFilter(not_quantizer)


def per_token_matmuls(model, names: set[str], *, signed_weights: bool = True) -> None:
    """Replace the fp32 ``MatMul`` nodes named in ``names`` (input ``x``, constant weight ``W``)
    by an int8 product with one activation scale per row of ``x``:

        m = max(|x|) over the last axis                       (one scale per token)
        q = QuantizeLinear(x / m, 1/127, 128)                 (uint8, symmetric around 128)
        y = MatMulIntegerToFloat(q, Wq, 1/127, w_scale, 128) * m

    ``Wq`` is ``W`` quantized to int8 with one scale per output column; without
    ``signed_weights`` it is stored as uint8 ``Wq + 128`` with a weight zero point of 128 (the
    same 255 levels, for CPUs whose u8 x s8 kernel saturates). ONNX Runtime's kernels take a
    single activation scale and zero point per call, so the per-row scale is applied to the
    input before and to the output after the integer product."""
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
        wq = np.clip(np.round(w / w_scale), -127, 127)
        wq = wq.astype(np.int8) if signed_weights else (wq + 128).astype(np.uint8)
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
                [p + "x_q", p + "weight_q", "pt_step", p + "weight_scale", "pt_zp"]
                + ([] if signed_weights else ["pt_zp"]),
                [p + "y_unit"],
                name=p + "matmul",
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [p + "y_unit", p + "absmax"], [y], name=p + "rescale"),
        ]
    del graph.node[:]
    graph.node.extend(out)
