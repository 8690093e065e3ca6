"""The adapters, bench/ and scripts/ import only core's public modules (docs/architecture.md's
```public block), so that core's private modules can be renamed without breaking them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
IMPORTERS = [
    ROOT / "packages" / "autoround-hf" / "src",
    ROOT / "packages" / "autoround-vllm" / "src",
    ROOT / "packages" / "autoround-llmc" / "src",
    ROOT / "bench",
    ROOT / "scripts",
]


def public_modules(text: str | None = None) -> set[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8") if text is None else text
    block = re.search(r"^```public\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, f"{ARCHITECTURE} has no ```public block"
    return set(block.group(1).split())


def core_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of ``autoround`` or a module below it, wherever it is;
    ``from autoround.x import y`` names ``autoround.x.y`` when ``y`` is a module (lowercase)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "autoround"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "autoround":
                continue
            found.append((node.lineno, node.module))
            found += [
                (node.lineno, f"{node.module}.{a.name}")
                for a in node.names
                if _names_a_module(node.module, a.name)
            ]
    return found


def _names_a_module(package: str, name: str) -> bool:
    path = ROOT / "packages" / "autoround-core" / "src" / Path(*package.split("."), name)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private_imports(files: list[Path], allowed: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line} imports {module}"
        for path in files
        for line, module in core_imports(path.read_text(encoding="utf-8"))
        if module not in allowed
    ]


def test_adapters_bench_and_scripts_import_only_public_modules():
    files = sorted(p for d in IMPORTERS for p in d.rglob("*.py") if ".venvs" not in p.parts)
    assert files, "no importers found"
    assert _private_imports(files, public_modules()) == []


def test_every_public_module_exists():
    source = ROOT / "packages" / "autoround-core" / "src"
    missing = [
        m
        for m in sorted(public_modules())
        if not (source / Path(*m.split("."))).with_suffix(".py").is_file()
        and not (source / Path(*m.split(".")) / "__init__.py").is_file()
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        (
            "from autoround.algorithms.signround_blocks import quantize_block",
            ["autoround.algorithms.signround_blocks"],
        ),
        ("def f():\n    import autoround.layer_quant", ["autoround.layer_quant"]),
        ("from autoround.formats import gptq_layout", ["autoround.formats.gptq_layout"]),
        ("from autoround.loading import load_dense", []),
        ("import autoround_hf.config", []),
    ],
)
def test_a_private_import_is_flagged_wherever_it_is(tmp_path, line, flagged):
    script = tmp_path / "script.py"
    script.write_text(line + "\n")
    found = _private_imports([script], public_modules())
    assert [entry.rsplit(" ", 1)[1] for entry in found] == flagged
