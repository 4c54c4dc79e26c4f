"""Variable-length attention on packed tokens: no FLOPs spent on padding.

The encoder keeps a batch's real tokens packed as ``[n_tokens, hidden]``; sequence ``i``
occupies rows ``cu_seqlens[i]:cu_seqlens[i + 1]``. A *varlen kernel* takes packed query, key
and value ``[n_tokens, heads, head_dim]`` plus that layout and returns the packed attention
output ``[n_tokens, heads, head_dim]``, attending only within each sequence.

Kernels, in the order ``"auto"`` tries them:

* ``"flash"``: flash-attn's ``flash_attn_varlen_func`` (CUDA, fp16 / bf16, when installed);
* ``"torch-varlen"``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA, fp16 / bf16, torch >= 2.10);
* ``"grouped"``: sequences of equal length gathered and run through
  ``scaled_dot_product_attention`` without a mask, one call per distinct length (any device;
  the CPU reference for the two above);
* ``None`` / ``"padded"``: unpack to the padded batch and use masked SDPA (the default on the
  CPU, where length-sorted batches carry little padding and one large call is fastest).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F

KERNELS = ("auto", "padded", "grouped", "torch-varlen", "flash")

VarlenKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "object"], torch.Tensor]


def pack_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rows ``index`` of ``x`` ``[rows, ...]``: a padded batch's real tokens, packed."""
    return x.index_select(0, index)


def unpack_rows(x: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """``[rows, ...]`` holding ``x``'s rows at ``index`` and zeros elsewhere: packed tokens
    put back in their padded batch (the inverse of :func:`pack_rows`)."""
    return x.new_zeros(rows, *x.shape[1:]).index_copy(0, index, x)


def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    cu = layout.cu_seqlens
    return flash_attn_varlen_func(q, k, v, cu, cu, layout.max_seqlen, layout.max_seqlen)


def torch_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    cu = layout.cu_seqlens
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return varlen_attn(q, k, v, cu, cu, layout.max_seqlen, layout.max_seqlen)


def grouped_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout) -> torch.Tensor:
    """Exact varlen attention from dense SDPA calls, one per distinct sequence length."""
    out = torch.empty_like(q)
    for length, rows in layout.length_groups():
        # rows: [n_seq, length] packed row indices of the sequences of this length
        flat = rows.reshape(-1)

        def gather(t: torch.Tensor, flat=flat, n=rows.shape[0], length=length) -> torch.Tensor:
            return t.index_select(0, flat).view(n, length, *t.shape[1:]).transpose(1, 2)

        o = F.scaled_dot_product_attention(gather(q), gather(k), gather(v))
        out.index_copy_(0, flat, o.transpose(1, 2).reshape(-1, *q.shape[1:]))
    return out


def _flash_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _torch_varlen_available() -> bool:
    try:
        return importlib.util.find_spec("torch.nn.attention.varlen") is not None
    except ModuleNotFoundError:
        return False


def select_kernel(name: str, device: torch.device, dtype: torch.dtype) -> VarlenKernel | None:
    """The varlen kernel called ``name`` (None means the padded path).

    ``"auto"`` picks flash-attn, then torch's varlen attention, on CUDA in fp16 / bf16, and the
    padded path otherwise. Naming a kernel that cannot run here raises ValueError.
    """
    if name not in KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; use one of {', '.join(KERNELS)}")
    half = dtype in (torch.float16, torch.bfloat16)
    cuda = device.type == "cuda"
    if name == "auto":
        if cuda and half and _flash_available():
            return flash_varlen
        if cuda and half and _torch_varlen_available():
            return torch_varlen
        return None
    if name == "padded":
        return None
    if name == "grouped":
        return grouped_varlen
    if not (cuda and half):
        raise ValueError(f"attention kernel {name!r} needs CUDA and fp16 / bf16")
    if name == "flash":
        if not _flash_available():
            raise ValueError("attention kernel 'flash' needs the flash-attn package")
        return flash_varlen
    if not _torch_varlen_available():
        raise ValueError("attention kernel 'torch-varlen' needs torch >= 2.10")
    return torch_varlen
