"""The size discipline of the packages: no module over 400 lines, no function over 100."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "packages").glob("*/src"))
MODULE_LINES = 400
FUNCTION_LINES = 100


def oversized(path: Path, text: str) -> list[str]:
    """``path:what (lines)`` for the module and every function of ``text`` over its budget."""
    found = []
    lines = text.count("\n")
    if lines > MODULE_LINES:
        found.append(f"{path} ({lines} lines)")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES:
                found.append(f"{path}:{node.name} ({length} lines)")
    return found


def test_no_module_or_function_is_over_its_budget() -> None:
    files = [p for source in SOURCES for p in source.rglob("*.py")]
    assert len(files) > 50, f"found only {len(files)} source files under {SOURCES}"
    assert [entry for p in files for entry in oversized(p.relative_to(ROOT), p.read_text())] == []


def test_an_oversized_function_and_module_are_named() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES))
    text = f"def long():\n{body}" + "\n" * MODULE_LINES
    assert oversized(Path("m.py"), text) == [
        f"m.py ({FUNCTION_LINES + 1 + MODULE_LINES} lines)",
        f"m.py:long ({FUNCTION_LINES + 1} lines)",
    ]
