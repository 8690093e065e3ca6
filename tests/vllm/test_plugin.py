"""The plugin's registration: through vLLM's entry point (in the venv), version warnings, SGLang."""

from __future__ import annotations

import json

import pytest
from vllm_harness import ROOT, run_engine, smollm2_checkpoint, vllm_python

from autoround_vllm.sglang_plugin import put_first
from autoround_vllm.vllm_plugin import SUPPORTED_VLLM, version_warning


@pytest.mark.parametrize("version", ["0.32.0", "0.32.3", "0.32.0rc1"])
def test_supported_versions_quiet(version):
    assert version_warning(version) is None


@pytest.mark.parametrize("version", ["0.31.2", "0.33.0", "1.0.0", "not-a-version"])
def test_unsupported_versions_warn_with_range(version):
    message = version_warning(version)
    assert f">={SUPPORTED_VLLM[0]},<{SUPPORTED_VLLM[1]}" in message and version in message


def test_put_first_orders_registry():
    registry = {"fp8": 1, "auto-round": 2, "autoround": 0}
    put_first(registry, "autoround", 3)
    assert list(registry.items()) == [("autoround", 3), ("fp8", 1), ("auto-round", 2)]


def test_entry_points_declared():
    text = (ROOT / "packages/autoround-vllm/pyproject.toml").read_text()
    assert '[project.entry-points."vllm.general_plugins"]' in text
    assert 'autoround = "autoround_vllm.vllm_plugin:register"' in text
    assert 'autoround = "autoround_vllm.sglang_plugin:register"' in text


@pytest.mark.integration
def test_registered_through_vllm_entry_point():
    proc = run_engine("plugin_checks.py", timeout=300)
    assert proc.stdout.splitlines()[-2] == "OK", proc.stdout[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["platform"] == "cpu"


@pytest.mark.integration
def test_vllm_serve_answers_completion(tmp_path):
    vllm_python()
    result = tmp_path / "completion.json"
    run_engine("serve_completion.py", str(smollm2_checkpoint("w4a16_g128")), str(result), timeout=600)
    answer = json.loads(result.read_text())
    assert answer["object"] == "text_completion" and answer["model"] == "ours"
    text = answer["choices"][0]["text"]
    assert len(text.strip()) > 0 and answer["usage"]["completion_tokens"] == 8
    print(f"vllm serve answered: {text!r}")
