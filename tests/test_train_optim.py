"""Precision settings of a training run: which ``--dtype`` autocasts where."""

from __future__ import annotations

import pytest
import torch


def test_autocast_dtype_follows_the_device_and_the_cpus_bf16_units():
    from crossrank.errors import CrossrankError
    from crossrank.train.optim import resolve_amp

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp(None, cpu) is None and resolve_amp("fp32", cpu) is None
    assert resolve_amp("bf16", cpu, flags={"avx512f", "avx512_bf16"}) is torch.bfloat16
    assert resolve_amp("bf16", cpu, flags={"amx"}) is torch.bfloat16
    assert resolve_amp("fp16", cuda) is torch.float16
    with pytest.raises(CrossrankError, match="needs bf16 units"):
        resolve_amp("bf16", cpu, flags={"avx2", "avx512f"})
    with pytest.raises(CrossrankError, match="bf16 on a CPU"):
        resolve_amp("fp16", cpu, flags={"avx512_bf16"})
    with pytest.raises(CrossrankError, match="unknown --dtype"):
        resolve_amp("int8", cpu)
