"""``create_backend``: the encoder backend called by name (torch, a device pool, ONNX Runtime,
OpenVINO).

Apart from :mod:`crossrank.engine.backend` (the protocol) so that the backends it builds can
import that protocol without a cycle.
"""

from __future__ import annotations

import torch

from crossrank.engine.backend import Backend, TorchBackend
from crossrank.engine.onnx_export import OnnxExport
from crossrank.engine.pool import DevicePool
from crossrank.errors import CrossrankError

#: backend names accepted by :func:`create_backend`
BACKENDS = ("torch", "onnx", "openvino")


def create_backend(
    name: str,
    *,
    model_dir,
    load_model,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    devices: list[torch.device] | None = None,
    export: OnnxExport | None = None,
) -> Backend:
    """The backend called ``name`` for the checkpoint in ``model_dir``.

    ``load_model(device[, dtype])`` returns our PyTorch model on ``device`` (in ``dtype``,
    default the runtime's); the ONNX and OpenVINO backends export it in fp32
    with the family's ``export`` (None: the family has no export) only when its cache lacks it
    (the cache is keyed by the checkpoint's content). Several
    ``devices`` give a :class:`~crossrank.engine.pool.DevicePool` (torch only).
    """
    if name not in BACKENDS:
        raise CrossrankError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if quantize not in (None, "int8"):
        raise CrossrankError(f"unknown quantize {quantize!r}; use None or 'int8'")
    if name == "torch":
        if quantize is not None:
            raise CrossrankError("quantize='int8' needs backend='onnx'")
        if devices and len(devices) > 1:
            return DevicePool(load_model, devices, dtype)
        return TorchBackend(load_model(device), device, dtype)
    if devices and len(devices) > 1:
        raise CrossrankError("devices=[...] needs backend='torch'")
    if export is None:
        raise CrossrankError(f"{model_dir}: this model has no ONNX export; use backend='torch'")
    if name == "openvino":
        from crossrank.engine.openvino_backend import PRECISIONS, OpenVinoBackend

        if quantize is not None:
            raise CrossrankError("quantize='int8' needs backend='onnx'")
        if device.type != "cpu" or dtype not in PRECISIONS:
            raise CrossrankError(
                "the OpenVINO backend runs fp32 or bf16 on the CPU; "
                f"got device {device} and dtype {dtype}"
            )
        # exported from fp32 weights whatever the dtype (one cached export serves both)
        fp32 = lambda: load_model(torch.device("cpu"), torch.float32)  # noqa: E731
        return OpenVinoBackend.from_checkpoint(model_dir, fp32, export, dtype=dtype)
    from crossrank.engine.onnx_backend import OnnxBackend  # needs crossrank[onnx]

    if device.type != "cpu" or dtype != torch.float32:
        raise CrossrankError(
            "the ONNX backend runs fp32 (optionally int8-quantized) on the CPU; "
            f"got device {device} and dtype {dtype}"
        )
    return OnnxBackend.from_checkpoint(
        model_dir, lambda: load_model(torch.device("cpu")), export, quantize=quantize
    )
