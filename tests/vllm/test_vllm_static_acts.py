"""autoround-vllm's float layers with calibrated activations (``FP8_STATIC``'s ``input_scale``,
NVFP4 W4A4's ``input_global_scale``): each fused part's stored scale is loaded as its own value
(vLLM's per-tensor parameters), the fused layer quantizes its input with the largest of the
parts' calibrated ranges, and the product is the dequantized weight's. Checked here without
vLLM (its parameter classes replaced by plain parameters, as in test_vllm_float), against plain
torch formulas written out below; and by vLLM itself (its CPU engine in the vllm venv) serving
checkpoints of the full pipeline with the in-memory model's greedy tokens.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_vllm_float import Served, serve_with_activations
from vllm_harness import vllm_python

import autoround
from autoround_vllm.float_method import DENSE_WEIGHT, FloatLinearLogic, FloatParameterKinds


def _plain(data: torch.Tensor, **_: Any) -> torch.nn.Parameter:
    return torch.nn.Parameter(data, requires_grad=False)


PLAIN_KINDS = FloatParameterKinds(_plain, _plain, _plain, _plain, _plain)


def _plain_fp8_static(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Intel's static FP8 qdq by hand: E4M3 of ``clamp(x / scale, ±448)``, times the scale."""
    return torch.clamp(x / scale, -448.0, 448.0).to(torch.float8_e4m3fn).float() * scale


def test_fused_fp8_static_parts_keep_their_scales_and_quantize_with_the_largest() -> None:
    g = torch.Generator().manual_seed(0)
    sizes, width = [32, 16, 16], 64
    scheme = autoround.PRESETS["FP8_STATIC"]
    logic = FloatLinearLogic(scheme, "model.layers.0.self_attn.qkv_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = torch.nn.Module()
    logic.create_weights(layer, width, sizes, width, sum(sizes), torch.float32)
    assert layer.input_scale.shape == (3,)  # one per part
    weight = (torch.randn(sum(sizes), width, generator=g) * 40).to(torch.float8_e4m3fn)
    row_scales = torch.rand(sum(sizes), generator=g) / 100
    layer.weight.data.copy_(weight)
    layer.weight_scale.data.copy_(row_scales)
    input_scales = [0.0078125, 0.015625, 0.01171875]  # bfloat16 values, as Intel stores them
    layer.input_scale.data.copy_(torch.tensor(input_scales))
    logic.process_weights_after_loading(layer)
    dense = weight.float() * row_scales[:, None]
    assert torch.equal(getattr(layer, DENSE_WEIGHT), dense)
    assert not hasattr(layer, "input_scale")
    x = torch.randn(5, width, generator=g) * 4
    expected = _plain_fp8_static(x, max(input_scales)) @ dense.T
    assert torch.equal(logic.apply(layer, x), expected)


def test_a_single_nvfp4_layer_quantizes_its_input_with_its_global_scale() -> None:
    scheme = autoround.PRESETS["NVFP4"]
    logic = FloatLinearLogic(scheme, "model.layers.0.mlp.down_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = torch.nn.Module()
    logic.create_weights(layer, 32, [16], 32, 16, torch.float32)
    assert layer.input_global_scale.shape == (1,) and layer.input_global_scale.dtype == torch.float32
    layer.weight_packed.data.copy_(torch.full((16, 16), 0x22, dtype=torch.uint8))  # every element 1.0
    layer.weight_scale.data.copy_(torch.full((16, 2), 448.0).to(torch.float8_e4m3fn))
    layer.weight_global_scale.data.copy_(torch.tensor([448.0]))
    layer.input_global_scale.data.copy_(torch.tensor([448.0 * 6.0 / 12.0]))  # a range of 12
    logic.process_weights_after_loading(layer)
    # a block of 16 whose largest value is 12 maps it to 6 (E2M1's largest) with block scale 2,
    # and 3.1 to 1.5 * 2 (the nearest E2M1 step to 1.55)
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1], x[0, 16] = 12.0, 3.1, -12.0
    quantized = torch.zeros(1, 32)
    quantized[0, 0], quantized[0, 1], quantized[0, 16] = 12.0, 3.0, -12.0
    assert torch.equal(logic.apply(layer, x), quantized @ torch.ones(16, 32).T)


# --- the engine, on checkpoints of the full pipeline (calibration, RTN, auto_round) -------------

#: name -> preset (RTN with calibration: each layer's input range observed on CALIBRATION).
ENGINE_CASES = {"fp8_static": "FP8_STATIC", "nvfp4_w4a4": "NVFP4"}
CALIBRATION = torch.tensor([[1, 17, 33, 5, 90, 64, 12, 3, 77, 41, 8, 100, 2, 55, 19, 23]] * 2)
#: Prompt logprobs: float32 in both, the same weights and input ranges; only the summation order
#: (and, for NVFP4, the float32 rounding of the dequantized weight) differs.
LOGPROB_TOL = 2e-3


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Served]:
    """name -> (what vLLM gave, the in-memory model's tokens and logprobs, and its logprobs with
    unquantized inputs)."""
    vllm_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("vllm_static")
    return serve_with_activations(tmp, ENGINE_CASES, calibration=CALIBRATION)


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_vllm_serves_calibrated_activations_with_the_in_memory_models_greedy_tokens(served, name) -> None:
    result, (tokens, logprobs, weight_only) = served[name]
    assert "error" not in result, f"vLLM refused {name}: {result}"
    assert result["quantization"] == "autoround"
    assert result["tokens"] == tokens
    gap = max(abs(a - b) for a, b in zip(result["logprobs"], logprobs, strict=True))
    assert gap < LOGPROB_TOL, f"{name}: prompt logprobs differ from the in-memory model's by {gap:.2e}"
    unquantized = max(abs(a - b) for a, b in zip(result["logprobs"], weight_only, strict=True))
    assert unquantized > max(LOGPROB_TOL, 4 * gap), (
        f"{name}: vLLM's inputs look unquantized ({unquantized:.2e}, {gap:.2e})"
    )
