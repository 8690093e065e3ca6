"""Our SGLang method, found through SGLang 0.5.23 itself (in the SGLang venv): by name, through
SGLang's plugin loader calling our entry point, and by checkpoint, through SGLang's ModelConfig."""

from __future__ import annotations

import pytest
from sglang_harness import INTEL_TINY, ROOT, run_json, sglang_python, vllm_test_helper

pytestmark = pytest.mark.integration


def test_entry_point_declared():
    text = (ROOT / "packages/autoround-vllm/pyproject.toml").read_text()
    assert '[project.entry-points."sglang.srt.plugins"]' in text
    assert 'autoround = "autoround_vllm.sglang_plugin:register"' in text


def test_found_by_name_and_by_checkpoint(tmp_path):
    sglang_python()  # skip before building a checkpoint when there is no venv
    ours = vllm_test_helper("vllm_harness").smollm2_checkpoint("w4a16_g128")
    seen = run_json("registration.py", str(INTEL_TINY), str(ours), tmp=tmp_path)
    assert seen["sglang"] == "0.5.23"
    assert seen["registry_head"][0] == "autoround" and seen["class"] == "AutoRoundSglangConfig"
    # Intel's W4A16 g32 fixture and our SmolLM2 W4A16 g128 (partial last groups)
    assert seen["checkpoints"][INTEL_TINY.name]["config"] == "AutoRoundSglangConfig(W4G32 sym int)"
    assert seen["checkpoints"][ours.name]["config"] == "AutoRoundSglangConfig(W4G128 sym int)"
    for found in seen["checkpoints"].values():
        assert found["found"] == "autoround" and found["user_choice_kept"] == "auto-round"
    assert "SGLang >=0.5.23,<0.6.0" in seen["version_warning"] and "0.7.1" in seen["version_warning"]
