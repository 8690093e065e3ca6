"""autoround-vllm over Intel's ``auto_round:fake`` checkpoints (``INT8_W8A8``, ``INT4`` W4A4:
dense quantize-dequantized weights, int per-token dynamic activations): vLLM's unquantized layers
with each input quantized by core's formula first. Checked without vLLM against the per-token
formula written out in plain torch below, and by vLLM itself (its CPU engine in the vllm venv)
serving checkpoints of the full pipeline with the in-memory model's greedy tokens and logprobs
(the in-memory model gives Intel's logits: tests/core/formats/test_fake_act_exports.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_vllm_float import Served, serve_with_activations
from vllm_harness import vllm_python

import autoround
from autoround_vllm.fake_method import input_quantizer
from autoround_vllm.selection import METHOD_NAME, choose_method

EXPORTS = Path(__file__).parents[1] / "fixtures" / "intel" / "exports"
#: Prompt logprobs: float32 in both around the same weights and the same qdq of the inputs
#: (Intel's float16 scale); only the summation order of vLLM's CPU GEMM differs.
LOGPROB_TOL = 2e-3


def _plain_int_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Intel's ``rtn_int_sym`` per token by hand: per row the value of largest magnitude maps to
    code ``-2**(bits-1)`` (scale ``∓absmax / 2**(bits-1)`` rounded to float16, at least 1e-5 in
    magnitude), codes rounded and clamped to the signed range, then multiplied back."""
    low, high = x.clamp(max=0).amin(-1, keepdim=True), x.clamp(min=0).amax(-1, keepdim=True)
    signed = torch.where(high < -low, -low, -high)
    scale = (signed / 2 ** (bits - 1)).to(torch.float16)
    scale = torch.where(scale.abs() < 1e-5, torch.full_like(scale, 1e-5), scale)
    codes = torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return codes * scale


@pytest.mark.parametrize(("preset", "bits"), [("INT8_W8A8", 8), ("INT4", 4)])
def test_the_input_is_quantized_per_token_as_plain_torch_computes_it(preset, bits) -> None:
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(bits)) * 3
    x[1, 7] = -20.0  # a row whose largest magnitude is negative
    assert torch.equal(input_quantizer(autoround.PRESETS[preset])(x), _plain_int_per_token(x, bits))
    weight_only = autoround.PRESETS[preset].replace(act_bits=16)
    assert input_quantizer(weight_only)(x) is x


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fake_checkpoints_are_ours_on_every_device(device) -> None:
    config = json.loads((EXPORTS / "ar_int8_w8a8" / "config.json").read_text())["quantization_config"]
    assert choose_method(config, None, device) == METHOD_NAME  # stock INC has no dense-weight layer


#: name -> preset, served from checkpoints of the full pipeline (RTN, ``auto_round``: the files
#: tests/core/formats/test_fake_act_exports.py checks against Intel's). Intel's own exports are
#: of a model with head_dim 16, which vLLM's CPU attention refuses ("Unsupported CPU attention
#: configuration: head_dim=16"): its tokens are matched by core and autoround-hf instead.
ENGINE_CASES = {"int8_w8a8": "INT8_W8A8", "int4_w4a4": "INT4"}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Served]:
    """name -> (what vLLM gave, the in-memory model's tokens and logprobs, and its logprobs with
    unquantized inputs)."""
    vllm_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("vllm_fake")
    served = serve_with_activations(tmp, ENGINE_CASES)
    for name in ENGINE_CASES:
        config = json.loads((tmp / name / "config.json").read_text())["quantization_config"]
        assert config["packing_format"] == "auto_round:fake"
    return served


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_vllm_serves_fake_checkpoints_with_the_in_memory_models_greedy_tokens(served, name) -> None:
    result, (tokens, logprobs, weight_only) = served[name]
    assert "error" not in result, f"vLLM refused {name}: {result}"
    assert result["quantization"] == METHOD_NAME
    assert result["tokens"] == tokens
    gap = max(abs(a - b) for a, b in zip(result["logprobs"], logprobs, strict=True))
    assert gap < LOGPROB_TOL, f"{name}: prompt logprobs differ from the in-memory model's by {gap:.2e}"
    unquantized = max(abs(a - b) for a, b in zip(result["logprobs"], weight_only, strict=True))
    assert unquantized > max(LOGPROB_TOL, 4 * gap), (
        f"{name}: vLLM's inputs look unquantized ({unquantized:.2e})"
    )
