"""autoround-vllm's float layers with dynamic activations: MX (``MXFP4`` / ``MXFP8`` W4A4 / W8A8,
Intel's presets, floor and RCEIL exponents; ``MXINT4`` W4A4) and ``FP8_BLOCK`` (FP8 128x128 weight tiles, FP8
activations per group of 128): nothing is stored for the activations; the fused layer
quantize-dequantizes each input (per block of 32, per group of 128) before the product with the
dequantized weight, each fused part's tiles its own. Checked here without vLLM (its parameter
classes replaced by plain parameters, as in test_vllm_float) against plain torch formulas written
out below; and by vLLM itself (its CPU engine in the vllm venv) serving checkpoints of the full
pipeline with the in-memory model's greedy tokens.
"""

from __future__ import annotations

import pytest
import torch
from test_vllm_float import Served, serve_with_activations
from test_vllm_static_acts import PLAIN_KINDS
from vllm_harness import vllm_python

import autoround
from autoround_vllm.float_method import DENSE_WEIGHT, INPUT_ABSMAX, FloatLinearLogic, _tiles_per_row


def _plain_mxfp8(x: torch.Tensor) -> torch.Tensor:
    """MXFP8 (E4M3 elements, floor exponent) by hand: per block of 32 features the shared scale
    ``2 ** (floor(log2(max|x|)) - 8)`` (8: E4M3's largest exponent), elements rounded to E4M3."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    scale = torch.exp2(torch.floor(torch.log2(blocks.abs().amax(-1, keepdim=True))) - 8)
    return ((blocks / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale).reshape(x.shape)


def test_fused_mxfp8_parts_quantize_each_input_per_block_of_32() -> None:
    g = torch.Generator().manual_seed(0)
    sizes, width = [32, 32], 64
    logic = FloatLinearLogic(autoround.PRESETS["MXFP8"], "model.layers.0.mlp.gate_up_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = torch.nn.Module()
    logic.create_weights(layer, width, sizes, width, sum(sizes), torch.float32)
    assert not any("input" in name for name, _ in layer.named_parameters())  # nothing stored
    codes = (torch.randn(sum(sizes), width, generator=g) * 40).to(torch.float8_e4m3fn)
    exponents = torch.randint(120, 125, (sum(sizes), width // 32), generator=g, dtype=torch.uint8)
    layer.weight.data.copy_(codes)
    layer.weight_scale.data.copy_(exponents)
    logic.process_weights_after_loading(layer)
    dense = codes.float() * torch.exp2(exponents.float() - 127).repeat_interleave(32, dim=1)
    assert torch.equal(getattr(layer, DENSE_WEIGHT), dense)
    assert not hasattr(layer, INPUT_ABSMAX)
    x = torch.randn(5, width, generator=g) * 4
    quantized = _plain_mxfp8(x)
    assert not torch.equal(quantized, x)
    assert torch.equal(logic.apply(layer, x), quantized @ dense.T)


def _plain_mxint4(x: torch.Tensor) -> torch.Tensor:
    """MXINT4 by hand: per block of 32 features the shared scale ``2 ** floor(log2(max|x|))``,
    elements multiples of 1/4 (half to even) clamped to +-1.75."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    scale = torch.exp2(torch.floor(torch.log2(blocks.abs().amax(-1, keepdim=True))))
    return (torch.round((blocks / scale).clamp(-1.75, 1.75) * 4) / 4 * scale).reshape(x.shape)


def test_fused_mxint4_parts_unpack_sign_magnitude_quarters_and_quantize_each_input() -> None:
    g = torch.Generator().manual_seed(0)
    sizes, width = [32, 64], 64
    logic = FloatLinearLogic(autoround.PRESETS["MXINT4"], "model.layers.0.mlp.gate_up_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = torch.nn.Module()
    logic.create_weights(layer, width, sizes, width, sum(sizes), torch.float32)
    assert not any("input" in name for name, _ in layer.named_parameters())  # nothing stored
    packed = torch.randint(0, 256, (sum(sizes), width // 2), generator=g, dtype=torch.uint8)
    exponents = torch.randint(120, 125, (sum(sizes), width // 32), generator=g, dtype=torch.uint8)
    layer.weight_packed.data.copy_(packed)
    layer.weight_scale.data.copy_(exponents)
    logic.process_weights_after_loading(layer)
    codes = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(sum(sizes), width).float()
    elements = torch.where(codes >= 8, -(codes - 8), codes) / 4  # sign bit 3 over i / 4
    dense = elements * torch.exp2(exponents.float() - 127).repeat_interleave(32, dim=1)
    assert torch.equal(getattr(layer, DENSE_WEIGHT), dense)
    x = torch.randn(5, width, generator=g) * 4
    quantized = _plain_mxint4(x)
    assert not torch.equal(quantized, x)
    assert torch.equal(logic.apply(layer, x), quantized @ dense.T)


def _plain_fp8_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """FP8 per group of features by hand: each group's scale ``max|x| / 448``, E4M3 elements."""
    parts = []
    for chunk in x.split(group, dim=-1):
        scale = chunk.abs().amax(-1, keepdim=True) / 448
        parts.append((chunk / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale)
    return torch.cat(parts, dim=-1)


def test_fused_fp8_block_parts_keep_their_own_partial_tiles() -> None:
    """gate/up parts of 192 and 64 rows (1.5 and 0.5 tiles of 128), 160 inputs (1.25 tiles): each
    part's tile scales go through the loader as vLLM's merged loader places rows, and every
    weight element is dequantized with its own part's tile; the input quantized per group of 128."""
    g = torch.Generator().manual_seed(0)
    sizes, width = [192, 64], 160
    logic = FloatLinearLogic(autoround.PRESETS["FP8_BLOCK"], "model.layers.0.mlp.gate_up_proj")
    logic.float_kinds = PLAIN_KINDS
    layer = torch.nn.Module()
    logic.create_weights(layer, width, sizes, width, sum(sizes), torch.float32)

    def merged(param: torch.nn.Parameter, loaded: torch.Tensor, shard: int) -> None:
        offset = sum(sizes[:shard])  # vLLM's load_merged_column_weight at tensor parallel 1
        param.data[offset : offset + sizes[shard]].copy_(loaded.narrow(0, 0, sizes[shard]))

    codes = (torch.randn(sum(sizes), width, generator=g) * 40).to(torch.float8_e4m3fn)
    tiles = [torch.rand(2, 2, generator=g), torch.rand(1, 2, generator=g)]
    layer.weight.data.copy_(codes)
    for shard, scale in enumerate(tiles):
        _tiles_per_row(merged, 128)(layer.weight_scale_inv, scale, shard)
    logic.process_weights_after_loading(layer)
    dense = codes.float().clone()
    for r in range(sum(sizes)):
        shard, local = (0, r) if r < 192 else (1, r - 192)
        for c in range(width):
            dense[r, c] *= tiles[shard][local // 128, c // 128]
    assert torch.equal(getattr(layer, DENSE_WEIGHT), dense)
    x = torch.randn(3, width, generator=g) * 4
    assert torch.equal(logic.apply(layer, x), _plain_fp8_groups(x, 128) @ dense.T)


# --- the engine, on checkpoints of the full pipeline (RTN, auto_round) -------------------------

#: name -> preset.
ENGINE_CASES = {
    "mxfp4_w4a4": "MXFP4",
    "mxfp8_w8a8": "MXFP8",
    "mxfp4_rceil": "MXFP4_RCEIL",
    "mxint4_w4a4": "MXINT4",
    "fp8_block": "FP8_BLOCK",  # q/k/v of 96/32/32 rows, 96 and 160 inputs: every tile partial
}
#: Prompt logprobs: float32 in both around the same weights and the same qdq of the inputs; only
#: the summation order differs.
LOGPROB_TOL = 2e-3


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Served]:
    """name -> (what vLLM gave, the in-memory model's tokens and logprobs, and its logprobs with
    unquantized inputs)."""
    vllm_python()  # skip before building anything when there is no venv
    return serve_with_activations(tmp_path_factory.mktemp("vllm_dynamic"), ENGINE_CASES)


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_vllm_serves_dynamic_activations_with_the_in_memory_models_greedy_tokens(served, name) -> None:
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
