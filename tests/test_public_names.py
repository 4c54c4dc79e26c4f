"""The lazily exported names of ``crossrank``, ``crossrank.eval`` and ``crossrank.verify`` are
the documented objects whatever was imported before: a submodule of the same name must not
shadow one (``from crossrank.eval import compare`` once gave the module ``compare.py``)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

PACKAGES = ("crossrank", "crossrank.eval", "crossrank.verify")


@pytest.mark.parametrize("name", PACKAGES)
def test_no_exported_name_is_a_module_after_every_submodule_is_imported(name):
    package = importlib.import_module(name)
    for info in pkgutil.iter_modules(package.__path__, f"{name}."):
        if info.name.endswith(".__main__") or (name == "crossrank" and info.ispkg):
            continue  # the CLI entry point; subpackages are checked by their own parameter
        importlib.import_module(info.name)  # what an earlier import may have loaded
    shadowed = [n for n in package.__all__ if isinstance(getattr(package, n), ModuleType)]
    assert not shadowed, f"{name}: {shadowed} resolve to submodules"


def test_from_import_gives_the_functions_in_a_fresh_process():
    code = (
        "import types\n"
        "from crossrank.eval import compare, rerank, evaluate\n"
        "from crossrank.verify import verify\n"
        "print(all(callable(f) and not isinstance(f, types.ModuleType)"
        " for f in (compare, rerank, evaluate, verify)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
