"""int8 matrix products for the decoders on the CPU: ``quantize="int8"`` with ``backend="torch"``.

Every linear layer of the decoder layers (attention q / k / v / o, MLP gate / up / down) becomes
an :class:`Int8Linear`:

* weights: int8, one scale per output row (symmetric, ``max |w| -> 127``), quantized once while
  the checkpoint streams in (:func:`crossrank.models.decoder.load_decoder_weights`), so no fp32
  copy of them is ever held;
* activations: int8, one scale per token (row), computed on the fly from that row alone. The
  MLP's inputs are rotated first (:data:`ROTATED`): ``x W^T = (x H)(W H)^T`` for an
  orthonormal Walsh-Hadamard matrix ``H`` mixing groups of 16 values (:func:`hadamard`),
  which spreads each large value over its group, so a few large values no longer set the
  row's scale while the many small ones lose their bits. The down projection's input
  (``act(gate) * up``) is the heavy-tailed one; gate / up's is the next largest source of
  error. ``W H`` is quantized once at load; ``x H`` costs four butterfly additions per value,
  fused with the steps before it (by the compiler, or in the MLP's C++ loop:
  :mod:`crossrank.models.int8_kernel`);
* q / k / v and gate / up run as one product each (:func:`fuse_projections`): their common
  input is quantized once;
* the product: ``torch._int_mm`` (int8 x int8 summed in int32, oneDNN: VNNI / AMX where the CPU
  has them, AVX2 elsewhere), then scaled back to fp32.

Measured on a random Gemma-shaped reranker (hidden 512, 6 layers), mean per-query Spearman
against fp32 on the benchmark's 2 x 50 debian-ir pairs / on ``auto``'s 3 x 16 calibration
pairs: one plain pass everywhere 0.989 / -; the down projection rotated over adjacent values
0.994 / 0.988; the down projection and gate / up rotated over adjacent values 0.993 / 0.997,
over values ``n / 16`` apart (what ships: the same accuracy, 7 % faster) 0.995 / 0.995; the
earlier design (no rotation, the down projection's rounding residual in a second int8
product: a fifth more int8 work) 0.997 / 0.991 (docs/notes/llm-cpu.md).

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

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from crossrank.errors import CrossrankError
from crossrank.models import int8_kernel

if TYPE_CHECKING:
    from crossrank.models.decoder_layers import MLP

#: the linear layers of a decoder layer that run in int8 (module names)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: the targets whose inputs are rotated before they are quantized (the MLP's)
ROTATED = ("gate_proj", "up_proj", "down_proj")
#: the largest Walsh-Hadamard block of the rotation
ROTATION_BLOCK = 16
_TINY = 1e-12


def rotation_block(width: int) -> int:
    """The rotation's block for inputs of ``width``: the largest power of two up to
    :data:`ROTATION_BLOCK` that divides it (1: no rotation)."""
    block = 1
    while block < ROTATION_BLOCK and width % (2 * block) == 0:
        block *= 2
    return block


def hadamard(x: torch.Tensor, block: int) -> torch.Tensor:
    """``x [..., n]`` times the orthonormal Walsh-Hadamard matrix that mixes each group of
    ``block`` values spaced ``n / block`` apart (``block``: a power of two dividing ``n``).

    ``x`` is viewed as ``[..., block, n / block]`` and transformed along the block axis in
    ``log2(block)`` butterfly steps, each adding and subtracting whole contiguous slices, so the
    compiler turns the transform into vector additions inside one loop (the same transform on
    adjacent values compiled to several strided passes, 2-3x the cost). The matrix is
    symmetric and its own inverse.

    Example:
        >>> x = torch.randn(3, 32)
        >>> bool(torch.allclose(hadamard(hadamard(x, 16), 16), x, atol=1e-6))
        True
    """
    shape, n = x.shape, x.shape[-1]
    parts = list(x.reshape(-1, block, n // block).unbind(1))
    step = 1
    while step < block:
        for start in range(0, block, 2 * step):
            for i in range(start, start + step):
                a, b = parts[i], parts[i + step]
                parts[i], parts[i + step] = a + b, a - b
        step *= 2
    return torch.stack(parts, 1).reshape(shape) * block**-0.5


def quantize_rows(rows: torch.Tensor, rotation: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 ``[n, k]`` and fp32 scales ``[n, 1]`` of float ``rows`` ``[n, k]``, each row alone
    (symmetric, ``max |x| -> 127``); with ``rotation`` > 1, of the rows times the
    Walsh-Hadamard matrix (:func:`hadamard`)."""
    rows = rows.float()
    if rotation > 1:
        rows = hadamard(rows, rotation)
    scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=_TINY).div_(127.0)
    return torch.round(rows / scale).to(torch.int8), scale


def quantize_weight(weight: torch.Tensor, rotation: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 [out, in], fp32 scale [out])`` of a weight, symmetric per output row; with
    ``rotation`` > 1, of the weight times the Walsh-Hadamard matrix (:func:`hadamard`)."""
    w = weight.detach().float()
    if rotation > 1:
        w = hadamard(w, rotation)
    scale = w.abs().amax(dim=1).clamp(min=_TINY) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with int8 weights (per output row) and int8 activations (per token).

    Buffers: ``qweight`` int8 ``[out, in]``, ``wscale`` fp32 ``[out]``, ``bias`` fp32 or None.
    Input of any float dtype, output fp32. ``rotation`` > 1: the inputs are multiplied by the
    Walsh-Hadamard matrix of that block (:func:`hadamard`) before they are quantized, and
    ``qweight`` holds the weight times the same matrix."""

    def __init__(self, in_features: int, out_features: int, bias: bool, rotation: int = 1) -> None:
        super().__init__()
        if rotation < 1 or rotation & (rotation - 1) or in_features % rotation:
            raise ValueError(f"rotation must be a power of two dividing {in_features}")
        self.in_features, self.out_features, self.rotation = in_features, out_features, rotation
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("wscale", torch.ones(out_features))
        self.bias: torch.Tensor | None
        if bias:
            self.register_buffer("bias", torch.zeros(out_features))
        else:
            self.bias = None

    @classmethod
    def from_float(
        cls, weight: torch.Tensor, bias: torch.Tensor | None = None, rotation: int = 1
    ) -> Int8Linear:
        """The int8 layer of a float weight ``[out, in]`` (and bias)."""
        out = cls(weight.shape[1], weight.shape[0], bias is not None, rotation)
        out.qweight, out.wscale = quantize_weight(weight, rotation)
        if bias is not None:
            out.bias = bias.detach().float().clone()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        sums, scale = self.int_sums(x.reshape(-1, self.in_features))
        return self.dequantize(sums, scale).view(*lead, self.out_features)

    def int_sums(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """int32 sums ``[n, out]`` of float ``rows`` ``[n, in]``, and the rows' scales."""
        q, scale = quantize_rows(rows, self.rotation)
        return torch._int_mm(q, self.qweight.t()), scale

    def from_int8(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """fp32 output ``[n, out]`` of rows already quantized (:func:`quantize_rows`, with
        this layer's rotation)."""
        return self.dequantize(torch._int_mm(q, self.qweight.t()), scale)

    def dequantize(self, sums: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """int32 sums ``[n, out]`` and row scales ``[n, 1]`` -> fp32 output (plus bias)."""
        out = sums.float().mul_(scale).mul_(self.wscale)
        if self.bias is not None:
            out.add_(self.bias)
        return out

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}, "
            f"rotation={self.rotation}"
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
        rotation = rotation_block(lin.in_features) if child in ROTATED else 1
        with torch.device(device):
            setattr(
                parent,
                child,
                Int8Linear(lin.in_features, lin.out_features, lin.bias is not None, rotation),
            )
    return names


def _concat(parts: list[Int8Linear]) -> Int8Linear:
    """One layer computing ``parts`` side by side (their rows stacked; one input, so one
    rotation)."""
    rotation = parts[0].rotation
    assert all(p.rotation == rotation for p in parts)
    out = Int8Linear(parts[0].in_features, sum(p.out_features for p in parts), False, rotation)
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

    operators: dict[str, object] = {}  # the MLP loop's operator, resolved once per activation
    for mod in model.modules():
        if isinstance(mod, Attention) and isinstance(mod.q_proj, Int8Linear):
            mod.qkv = _concat([mod.q_proj, mod.k_proj, mod.v_proj])
            del mod.q_proj, mod.k_proj, mod.v_proj
        elif isinstance(mod, MLP) and isinstance(mod.gate_proj, Int8Linear):
            mod.gate_up = _concat([mod.gate_proj, mod.up_proj])
            del mod.gate_proj, mod.up_proj
            if mod.hidden_act not in operators:
                operators[mod.hidden_act] = int8_kernel.operator(mod.hidden_act)
            mod.glu_op = operators[mod.hidden_act] if mod.gate_up.bias is None else None
            mod.fused_forward = gated_mlp


def gated_mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """``down(act(gate(x)) * up(x))`` of an MLP whose gate / up is one int8 product (after
    :func:`fuse_projections`); the step between the two products by the compiled loop
    (:func:`crossrank.models.int8_kernel.operator`) where it runs, else by tensor operations."""
    gate_up, down = mlp.gate_up, mlp.down_proj
    assert isinstance(gate_up, Int8Linear) and isinstance(down, Int8Linear)
    lead = x.shape[:-1]
    sums, scale = gate_up.int_sums(x.reshape(-1, gate_up.in_features))
    if mlp.glu_op is not None:
        code = int8_kernel.ACTIVATIONS[mlp.hidden_act]
        q, qscale = mlp.glu_op(sums, scale, gate_up.wscale, code, down.rotation)
    else:
        q, qscale = glu_quantize_reference(
            sums, scale, gate_up.wscale, mlp.act, down.rotation, gate_up.bias
        )
    return down.from_int8(q, qscale).view(*lead, down.out_features)


def glu_quantize_reference(
    sums: torch.Tensor,
    xscale: torch.Tensor,
    wscale: torch.Tensor,
    act: Callable[[torch.Tensor], torch.Tensor],
    block: int,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step between the MLP's two products as tensor operations: ``sums`` int32
    ``[rows, 2n]`` (gate | up), ``xscale`` ``[rows, 1]``, ``wscale`` ``[2n]`` (and ``bias``)
    -> int8 ``[rows, n]`` and scales ``[rows, 1]`` of ``hadamard(act(gate) * up, block)``
    (:mod:`crossrank.models.int8_kernel` computes the same in one loop)."""
    x = sums.float().mul_(xscale).mul_(wscale)
    if bias is not None:
        x.add_(bias)
    gate, up = x.chunk(2, dim=-1)
    return quantize_rows(act(gate) * up, block)


def check_runtime(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse what the int8 path does not run: a non-CPU device, a dtype other than fp32."""
    if device.type != "cpu":
        raise CrossrankError(f"quantize='int8' runs on the CPU; got device {device}")
    if dtype != torch.float32:
        raise CrossrankError(
            "quantize='int8' computes everything but the int8 products in fp32; drop dtype "
            f"(got {dtype})"
        )
