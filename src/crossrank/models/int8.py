"""int8 matrix products for the decoders on the CPU: ``quantize="int8"`` with ``backend="torch"``.

Every linear layer of the decoder layers (attention q / k / v / o, MLP gate / up / down) becomes
an :class:`Int8Linear`:

* weights: int8, one scale per output row (symmetric, ``max |w| -> 127``), quantized once while
  the checkpoint streams in (:func:`crossrank.models.decoder.load_decoder_weights`), so no fp32
  copy of them is ever held;
* activations: int8, one scale per token (row), computed on the fly from that row alone. The
  MLP's down projection, whose input (``act(gate) * up``) is heavy-tailed, takes two passes
  (:data:`TWO_PASS`): the rounding residual of the first is quantized again and multiplied by
  the same int8 weights, about 15 bits of activation for one more int8 product;
* q / k / v and gate / up run as one product each (:func:`fuse_projections`): their common
  input is quantized once;
* the product: ``torch._int_mm`` (int8 x int8 summed in int32, oneDNN: VNNI / AMX where the CPU
  has them, AVX2 elsewhere), then scaled back to fp32.

Measured on a random Gemma-shaped reranker (hidden 512, 6 layers, 2 x 50 debian-ir pairs):
one pass everywhere gave mean per-query Spearman 0.985 against fp32, two passes on the down
projection 0.998 (bf16: 0.995), at 2.1x the speed of fp32 (docs/performance.md).

The integer sums are exact on every instruction set (checked under an emulated AVX2-only CPU:
no 16-bit saturation) and each row is quantized alone, so a pair's products do not depend on
the other pairs of its batch. Embeddings, norms, attention and the scoring rows stay fp32.

How faithful this is depends on the model (activation outliers hurt per-token int8), so
``backend="auto"`` picks it only after measuring it on the model being run
(:mod:`crossrank.engine.calibrate`).

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(64, 32)
    >>> q = Int8Linear.from_float(lin.weight, lin.bias)
    >>> x = torch.randn(5, 64)
    >>> bool((q(x) - lin(x)).abs().max() < 0.05)
    True
"""

from __future__ import annotations

import torch
from torch import nn

from crossrank.errors import CrossrankError

#: the linear layers of a decoder layer that run in int8 (module names)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: the targets whose activations take two int8 passes (heavy-tailed inputs)
TWO_PASS = ("down_proj",)
_TINY = 1e-12


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 [out, in], fp32 scale [out])`` of a weight, symmetric per output row."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=_TINY) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with int8 weights (per output row) and int8 activations (per token).

    Buffers: ``qweight`` int8 ``[out, in]``, ``wscale`` fp32 ``[out]``, ``bias`` fp32 or None.
    Input of any float dtype, output fp32. ``passes=2`` quantizes the activations' rounding
    residual too (a second int8 product with the same weights)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, passes: int = 1) -> None:
        super().__init__()
        if passes not in (1, 2):
            raise ValueError(f"passes must be 1 or 2, got {passes}")
        self.in_features, self.out_features, self.passes = in_features, out_features, passes
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("wscale", torch.ones(out_features))
        self.bias: torch.Tensor | None
        if bias:
            self.register_buffer("bias", torch.zeros(out_features))
        else:
            self.bias = None

    @classmethod
    def from_float(
        cls, weight: torch.Tensor, bias: torch.Tensor | None = None, passes: int = 1
    ) -> Int8Linear:
        """The int8 layer of a float weight ``[out, in]`` (and bias)."""
        out = cls(weight.shape[1], weight.shape[0], bias is not None, passes)
        out.qweight, out.wscale = quantize_weight(weight)
        if bias is not None:
            out.bias = bias.detach().float().clone()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).float()
        weight = self.qweight.t()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=_TINY).div_(127.0)
        q = torch.round(rows / scale)
        out = torch._int_mm(q.to(torch.int8), weight).float().mul_(scale)
        if self.passes == 2:  # the residual, |r| <= scale / 2, on a 127x finer grid
            residual = rows - q.mul_(scale)  # never in place: rows may be the input
            fine = scale.div_(127.0)
            q2 = torch.round(residual / fine).to(torch.int8)
            out.add_(torch._int_mm(q2, weight).float().mul_(fine))
        out.mul_(self.wscale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}, "
            f"passes={self.passes}"
        )


def int8_targets(model: nn.Module) -> list[str]:
    """Names of the linear layers :func:`replace_linears` turns into int8 (those of
    :data:`TARGETS` inside the decoder layers)."""
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
        and ".layers." in f".{name}"
        and name.split(".")[-1] in TARGETS
    ]


def replace_linears(model: nn.Module) -> list[str]:
    """Swap every target linear layer for an (empty) :class:`Int8Linear` of its shape, in place
    (on the meta device before loading); returns their names."""
    names = int8_targets(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        lin = getattr(parent, child)
        device = lin.weight.device
        passes = 2 if child in TWO_PASS else 1
        with torch.device(device):
            setattr(
                parent,
                child,
                Int8Linear(lin.in_features, lin.out_features, lin.bias is not None, passes),
            )
    return names


def _concat(parts: list[Int8Linear]) -> Int8Linear:
    """One layer computing ``parts`` side by side (their rows stacked); one pass each."""
    out = Int8Linear(parts[0].in_features, sum(p.out_features for p in parts), False)
    out.qweight = torch.cat([p.qweight for p in parts])
    out.wscale = torch.cat([p.wscale for p in parts])
    if any(p.bias is not None for p in parts):
        out.bias = torch.cat(
            [p.bias if p.bias is not None else torch.zeros(p.out_features) for p in parts]
        )
    return out


def fuse_projections(model: nn.Module) -> None:
    """After loading: each attention's q / k / v and each MLP's gate / up become one int8
    product (``qkv`` / ``gate_up``; the separate layers are removed), so their common input is
    quantized once and one larger product replaces two or three small ones. Rows are quantized
    alone, so the fused outputs equal the separate ones bitwise."""
    from crossrank.models.decoder_layers import MLP, Attention

    for mod in model.modules():
        if isinstance(mod, Attention) and isinstance(mod.q_proj, Int8Linear):
            mod.qkv = _concat([mod.q_proj, mod.k_proj, mod.v_proj])
            del mod.q_proj, mod.k_proj, mod.v_proj
        elif isinstance(mod, MLP) and isinstance(mod.gate_proj, Int8Linear):
            mod.gate_up = _concat([mod.gate_proj, mod.up_proj])
            del mod.gate_proj, mod.up_proj


def check_runtime(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse what the int8 path does not run: a non-CPU device, a dtype other than fp32."""
    if device.type != "cpu":
        raise CrossrankError(f"quantize='int8' runs on the CPU; got device {device}")
    if dtype != torch.float32:
        raise CrossrankError(
            "quantize='int8' computes everything but the int8 products in fp32; drop dtype "
            f"(got {dtype})"
        )
