"""The checks of option values: ``(name, value) -> the value to keep``, or an
:class:`~crossrank.errors.InputError` naming the option.

They import numpy / torch (through :mod:`crossrank.inputs`) when they run: the commands'
parsers are built from :mod:`crossrank.options`, and ``crossrank --help`` must not load torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from crossrank.errors import InputError

if TYPE_CHECKING:
    import torch


def check_text(name: str, value: Any) -> str:
    """A string the tokenizer can take: valid Unicode (no lone surrogate, as undecodable
    command-line bytes become) and no NUL character."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{name} is not valid Unicode ({exc.reason} at character {exc.start}); give UTF-8 text"
        ) from None
    if "\x00" in value:
        raise InputError(f"{name} contains a NUL character at {value.index(chr(0))}")
    return value


def check_positive(name: str, value: Any, minimum: int = 1) -> int:
    from crossrank.inputs import positive_int

    return positive_int(name, value, minimum=minimum)


def check_count(name: str, value: Any) -> int:
    return check_positive(name, value, minimum=0)


def check_bool(name: str, value: Any) -> bool:
    import numpy as np

    if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise InputError(f"{name} must be True or False, got {value!r}")


def check_layers(name: str, value: Any) -> tuple[int, ...] | None:
    from crossrank.inputs import as_layers

    return as_layers(value)


def check_device(name: str, value: Any) -> str | torch.device:
    import torch

    if not isinstance(value, (str, torch.device)):
        raise InputError(f"{name} must be a device name such as 'cpu' or 'cuda:1', got {value!r}")
    return value


def check_devices(name: str, value: Any) -> list[str | torch.device]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InputError(f"{name} must be a list of devices, got {value!r}")
    return [check_device(f"{name} entry", d) for d in value]


def check_dtype(name: str, value: Any) -> str | torch.dtype:
    import torch

    from crossrank.inputs import resolve_dtype

    if not isinstance(value, (str, torch.dtype)):
        raise InputError(f"{name} must be fp32, fp16 or bf16, got {value!r}")
    resolve_dtype(value, torch.device("meta"))  # known names (fp16 on the CPU: at load)
    return value


def check_path(name: str, value: Any) -> str | os.PathLike[str]:
    if not isinstance(value, (str, os.PathLike)):
        raise InputError(f"{name} must be a path, got {type(value).__name__}")
    return value


def one_of(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise InputError(
                f"unknown {name} {value!r}; use one of {', '.join(map(repr, choices))}"
            )
        return value

    return check
