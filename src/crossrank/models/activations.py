"""The activation functions that config.json names (``hidden_act``, ``hidden_activation``,
``classifier_activation``), for every family: one table, one error.

Example:
    >>> import torch
    >>> from crossrank.models.activations import activation
    >>> activation("gelu_pytorch_tanh")(torch.tensor([1.0]))
    tensor([0.8412])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from crossrank.errors import UnsupportedModelError

Activation = Callable[[torch.Tensor], torch.Tensor]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (transformers' ``gelu_new`` / ``gelu_pytorch_tanh``)."""
    return F.gelu(x, approximate="tanh")


def gelu_tanh_by_exp(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh form written with one ``exp``: ``0.5 x (1 + tanh(z)) = x / (1 + exp(-2z))``.

    The same function as :func:`gelu_tanh` (5e-7 apart at most against fp64, as ``F.gelu``
    itself; the tests bound it by 2e-6), for compiled layers: the compiler's vectorised
    ``exp`` costs about a third of its ``tanh`` (Gemma shape, int8: the kernel holding the
    activation went from 1.5 to 0.8 ns per element on 2 cores)."""
    z = x + 0.044715 * x * x * x
    return x / (1.0 + torch.exp(-1.5957691216057308 * z))


_ACTIVATIONS: dict[str, Activation] = {
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str, compiled: bool = False) -> Activation:
    """The activation config.json calls ``name``; ``compiled``: the form that compiles
    fastest (only GELU-tanh differs, see :func:`gelu_tanh_by_exp`).

    Raises:
        UnsupportedModelError: ``name`` is not one of the names above.
    """
    fn = _ACTIVATIONS.get(name)
    if fn is None:
        known = ", ".join(_ACTIVATIONS)
        raise UnsupportedModelError(f"activation {name!r} is not supported (known: {known})")
    return gelu_tanh_by_exp if compiled and fn is gelu_tanh else fn
