"""The package's imports form no cycle and run only down the layers docs/architecture.md draws.

Every import statement counts, wherever it is: at module level, inside a function (a lazy import
that hides a cycle is still one) and under ``if TYPE_CHECKING:``. The graph is read from the
source with :mod:`ast`, independently of the package's own code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "packages" / "autoround-core" / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def package_modules(source: Path = SOURCE, package: str = "autoround") -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is its __init__)."""
    modules = {}
    for path in (source / package).rglob("*.py"):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` loads: itself, or the package that defines it as an attribute."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, modules: dict[str, Path], package: str = "autoround") -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    path = modules[module]
    imported: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(_known(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                imported.add(submodule if submodule in modules else _known(base, modules))
    return {name for name in imported if name is not None and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {module: imports_of(module, modules) for module in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def documented_layers(text: str | None = None) -> list[tuple[str, list[str]]]:
    """(layer name, module prefixes) from the ```layers block of docs/architecture.md, top first."""
    text = ARCHITECTURE.read_text(encoding="utf-8") if text is None else text
    block = re.search(r"^```layers\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, f"{ARCHITECTURE} has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        name, _, members = line.partition(":")
        layers.append((name.strip(), members.split()))
    return layers


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer whose longest prefix names ``module`` (0 = top), or None."""
    best: tuple[int, int] | None = None
    for position, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            names_it = module == prefix or module.startswith(prefix + ".")
            if names_it and (best is None or len(prefix) > best[0]):
                best = (len(prefix), position)
    return None if best is None else best[1]


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_every_module_belongs_to_a_documented_layer():
    layers = documented_layers()
    unplaced = sorted(m for m in package_modules() if layer_of(m, layers) is None)
    assert unplaced == [], f"add these to the ```layers block of {ARCHITECTURE.name}"


def test_no_import_runs_up_the_documented_layers():
    layers = documented_layers()
    upward = sorted(
        f"{module} ({layers[layer_of(module, layers) or 0][0]}) imports {target} "
        f"({layers[layer_of(target, layers) or 0][0]})"
        for module, targets in import_graph().items()
        for target in targets
        if (layer_of(target, layers) or 0) < (layer_of(module, layers) or 0)
    )
    assert upward == []


# The checks themselves, on made-up graphs: they must be able to fail.


def test_a_cycle_through_three_modules_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_a_lazy_import_inside_a_function_counts(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.high import g\n    return g\n")
    (package / "high.py").write_text("from pkg import low\n\ndef g():\n    return low\n")
    modules = package_modules(tmp_path, "pkg")
    graph = {m: imports_of(m, modules, "pkg") for m in modules}
    assert cycles(graph) == [["pkg.high", "pkg.low"]]


def test_the_longest_prefix_places_a_module():
    layers = [("top", ["p.a"]), ("bottom", ["p"])]
    assert layer_of("p.a.x", layers) == 0
    assert layer_of("p.b", layers) == 1
    assert layer_of("q", layers) is None
