"""The import layers of docs/architecture.md, checked on the source.

Every module under ``src/crossrank`` is parsed (never imported) and every import of a crossrank
module is collected: top-level and inside functions (they run too), under ``TYPE_CHECKING``,
relative ones, ``importlib.import_module("crossrank...")`` with a literal name, and the module
names that module-level registries hold as strings (``COMMAND_MODULES``, the families'
``REGISTRY``, the training ``TASKS``...). The layers are read from the table under "## Layers"
in docs/architecture.md, so the document and this test cannot disagree. Checked: every module
has a layer, no module imports one of a higher layer, and the imports have no cycle.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = "crossrank"


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` (both crossrank modules) at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int


def module_name(path: Path, src: Path) -> str:
    """``src/crossrank/engine/runner.py`` -> ``crossrank.engine.runner`` (a package's
    ``__init__.py`` is the package)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(src: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``src``, by dotted name."""
    return {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or the longest known module it lies in (``from
    crossrank.errors import InputError`` names ``crossrank.errors.InputError``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _registry_strings(tree: ast.Module) -> list[tuple[str, int]]:
    """String constants held by module-level tuple / list / set / dict literals."""
    found = []
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if not isinstance(value, ast.Tuple | ast.List | ast.Set | ast.Dict):
            continue
        for sub in ast.walk(value):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                found.append((sub.value, sub.lineno))
    return found


def imports_of(name: str, path: Path, known: dict[str, Path], package: str = PACKAGE):
    """Every import of a module of ``package`` by the module ``name`` (file ``path``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # ``from pkg import module`` names the module
                full = f"{base}.{alias.name}"
                named.append((full if full in known else base, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            named.append((node.args[0].value, node.lineno))
    for text, line in _registry_strings(tree):
        module = text.partition(":")[0]  # "module" or "module:attribute"
        if module in known:
            named.append((module, line))
    out = []
    for target, line in named:
        if target != package and not target.startswith(package + "."):
            continue
        resolved = resolve(target, known)
        if resolved is not None and resolved != name:
            out.append(Import(name, resolved, path, line))
    return out


def import_graph(src: Path, package: str = PACKAGE) -> dict[str, list[Import]]:
    """``{module: [its imports of package modules]}`` for every module of ``package``."""
    known = find_modules(src, package)
    return {name: imports_of(name, path, known, package) for name, path in known.items()}


def find_cycle(graph: dict[str, list[Import]]) -> list[Import] | None:
    """One import cycle (the edges, in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[Import] = []

    def visit(node: str) -> list[Import] | None:
        state[node] = 1
        for edge in graph.get(node, []):
            if state.get(edge.target) == 1:
                start = next(i for i, e in enumerate(path) if e.source == edge.target)
                return [*path[start:], edge] if path else [edge]
            if edge.target not in state:
                path.append(edge)
                found = visit(edge.target)
                if found is not None:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            path.clear()
            found = visit(node)
            if found is not None:
                return found
    return None


def read_layers(doc: Path = DOC, package: str = PACKAGE) -> list[tuple[str, list[str]]]:
    """The table under "## Layers": ``[(layer, [module names])]``, top layer first. A name
    covers a package and everything under it unless a longer name is listed; the package's
    own name (``crossrank``) stands for its ``__init__`` alone."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [r.strip() for r in section.splitlines() if r.strip().startswith("|")]
    layers = []
    for row in rows[2:]:  # after the header and its rule
        layer, modules = (c.strip() for c in row.strip("|").split("|")[:2])
        names = re.findall(r"`([\w.]+)`", re.sub(r"\([^)]*\)", "", modules))  # not remarks
        layers.append((layer, [n if n == package else f"{package}.{n}" for n in names]))
    return layers


def layer_of(
    module: str, layers: list[tuple[str, list[str]]], package: str = PACKAGE
) -> int | None:
    """Index of ``module``'s layer (0 is the top), by its longest listed name."""
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(layers):
        for n in names:
            covers = module == n or (n != package and module.startswith(n + "."))
            if covers and (best is None or len(n) > best[0]):
                best = (len(n), index)
    return None if best is None else best[1]


# -- the collector itself -----------------------------------------------------------------


def test_collector_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "lazy.py").write_text("X = 1\n")
    (pkg / "typed.py").write_text("X = 1\n")
    (pkg / "named.py").write_text("X = 1\n")
    (pkg / "listed.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..low import X\n"  # relative, top level
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.typed import X\n"
        "REGISTRY = {'a': 'pkg.listed:Thing'}\n"
        "def f():\n"
        "    from pkg import lazy\n"  # inside a function
        "    return importlib.import_module('pkg.named')\n"
    )
    graph = import_graph(tmp_path, "pkg")
    got = {(e.target, e.line) for e in graph["pkg.sub.mod"]}
    assert got == {
        ("pkg.low", 2),
        ("pkg.typed", 5),
        ("pkg.listed", 6),
        ("pkg.lazy", 8),
        ("pkg.named", 9),
    }
    edges = [Import("pkg.a", "pkg.b", Path("a.py"), 1), Import("pkg.b", "pkg.a", Path("b.py"), 2)]
    cycle = find_cycle({"pkg.a": edges[:1], "pkg.b": edges[1:]})
    assert cycle is not None and [e.source for e in cycle] == ["pkg.a", "pkg.b"]


# -- crossrank ----------------------------------------------------------------------------


def _where(edge: Import) -> str:
    return f"{edge.path.relative_to(ROOT)}:{edge.line}"


def test_every_module_has_a_layer_and_every_listed_name_exists():
    layers = read_layers()
    assert [name for name, _ in layers][0] == "commands", layers
    modules = find_modules(SRC)
    missing = [m for m in modules if layer_of(m, layers) is None]
    assert not missing, f"modules without a layer in docs/architecture.md: {missing}"
    stale = [
        n
        for _, names in layers
        for n in names
        if not any(m == n or m.startswith(n + ".") for m in modules)
    ]
    assert not stale, f"docs/architecture.md lists modules that do not exist: {stale}"


def test_command_modules_are_in_the_top_layer():
    from crossrank.cli import COMMAND_MODULES

    layers = read_layers()
    below = [m for m in COMMAND_MODULES if layer_of(m, layers) != 0]
    assert not below, f"command modules outside the top layer: {below}"


def test_no_module_imports_a_higher_layer():
    layers = read_layers()
    graph = import_graph(SRC)
    upward = []
    for edges in graph.values():
        for e in edges:
            low, high = layer_of(e.source, layers), layer_of(e.target, layers)
            if low is not None and high is not None and high < low:
                upward.append(
                    f"{_where(e)}: {e.source} ({layers[low][0]}) imports {e.target} "
                    f"({layers[high][0]})"
                )
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycle = find_cycle(import_graph(SRC))
    if cycle is not None:
        steps = " -> ".join(f"{e.target} ({_where(e)})" for e in cycle)
        raise AssertionError(f"import cycle: {cycle[0].source} -> {steps}")
