"""Harness of the SGLang tests: the SGLang venv and scripts run in it.

SGLang never enters the workspace env: tests that need it run ``tests/sglang/engine/*.py`` with the
venv's python (made by ``tests/sglang/setup_venv.sh``; ``.ci/run`` makes it). Without the venv
those tests skip, unless ``AUTOROUND_REQUIRE_SGLANG_VENV=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = Path(__file__).parent / "engine"
#: Our packages' sources in this checkout, put first on the venv's path (the venv's editable
#: installs, which give the entry point, may come from another checkout sharing the cached venv).
PACKAGE_SOURCES = [ROOT / "packages" / f"autoround-{p}" / "src" for p in ("core", "vllm")]
VENV = Path(os.environ.get("AUTOROUND_SGLANG_VENV", Path.home() / ".cache/autoround-dev/sglang-venv"))
INTEL_TINY = ROOT / "tests" / "fixtures" / "intel" / "tiny_llama_w4a16_g32"
#: Quiet, single-threaded where it does not matter: the machine has 2 shared cores.
SCRIPT_ENV = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def sglang_python() -> Path:
    """The venv's python, or skip (fail under ``AUTOROUND_REQUIRE_SGLANG_VENV=1``)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        why = f"no sglang venv at {VENV}: run tests/sglang/setup_venv.sh"
        if os.environ.get("AUTOROUND_REQUIRE_SGLANG_VENV") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return python


def run_script(
    script: str, *args: str, timeout: int = 300, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/sglang/engine/<script>`` with the venv's python; unless ``check`` is off, fail
    with its output's tail when it exits non-zero."""
    full_env = {
        **os.environ,
        **SCRIPT_ENV,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(map(str, PACKAGE_SOURCES)),
    }
    full_env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        [str(sglang_python()), str(ENGINE / script), *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    if check and proc.returncode != 0:
        pytest.fail(f"{script} {args} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


def run_json(script: str, *args: str, tmp: Path, timeout: int = 300) -> dict[str, Any]:
    """Run a script that writes its findings as JSON to the path it is given last; return them."""
    result = tmp / f"{Path(script).stem}.json"
    run_script(script, *args, str(result), timeout=timeout)
    return json.loads(result.read_text())


def vllm_test_helper(name: str) -> ModuleType:
    """A helper module of ``tests/vllm`` (its SmolLM2 checkpoints, its transformers reference),
    loaded by path: the SGLang tests share its cached checkpoints and its reference side."""
    spec = importlib.util.spec_from_file_location(
        f"_sglang_uses_{name}", ROOT / "tests" / "vllm" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
