"""FP8_BLOCK weights (a scheme's ``block_shape``): the 2-D tiles the grouping cuts (checked
against plain slicing of a zero-padded copy), round-to-nearest through the layer quantizers
bit-identical to Intel 0.16.1's ``block_fp8`` (``fp_qdq.safetensors``: edge tiles padded in both
dimensions), and SignRound's tile tuning (an offset per weight, a clipping factor per tile):
values, gradients and final scales equal to Intel's (``fp_block_tuning.safetensors``, made by
``scripts/intel/make_fp_block_fixture.py`` inside Intel's venv).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from autoround.algorithms.opt_rtn import opt_rtn_weight
from autoround.algorithms.signround import TunedLinear, TunedParams, qdq_with
from autoround.dtypes import from_groups, to_groups
from autoround.layer_quant import quantize_weight, tile_grid
from autoround.schemes import PRESETS, Scheme

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
with safe_open(FIXTURES / "fp_qdq.safetensors", "pt") as _f:
    BLOCK_CASES = [c for c in json.loads(_f.metadata()["cases"]) if c["resolved"] == "block_fp8"]
RTN = load_file(FIXTURES / "fp_qdq.safetensors")
TUNING = load_file(FIXTURES / "fp_block_tuning.safetensors")
TUNING_BLOCK = (16, 32)
AS_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so -0.0 differs from 0.0)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(AS_INT[a.dtype]), b.view(AS_INT[b.dtype]))
    )


def block_scheme(block: tuple[int, int]) -> Scheme:
    return Scheme(bits=8, data_type="fp", group_size=block[1], block_shape=block)


# --- the tiles ---


@pytest.mark.parametrize(
    ("shape", "block"),
    [
        ((48, 96), (16, 32)),
        ((40, 72), (16, 32)),
        ((130, 136), (128, 128)),
        ((96, 160), (128, 128)),
        ((5, 7), (4, 4)),
    ],
)
def test_each_group_is_one_zero_padded_tile_in_row_major_order(shape, block) -> None:
    weight = torch.randn(shape)
    grouped, layout = to_groups(weight, block)
    rows, cols = math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1])
    padded = torch.zeros(rows * block[0], cols * block[1])
    padded[: shape[0], : shape[1]] = weight
    assert grouped.shape == (rows * cols, block[0] * block[1])
    assert (layout.tile_rows, layout.groups_per_row) == (rows, cols) == tile_grid(block_scheme(block), shape)
    for i in range(rows):
        for j in range(cols):
            tile = padded[i * block[0] : (i + 1) * block[0], j * block[1] : (j + 1) * block[1]]
            assert torch.equal(grouped[i * cols + j], tile.reshape(-1)), (i, j)
    assert torch.equal(from_groups(grouped, layout), weight)


# --- round-to-nearest: Intel's block_fp8 ---


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c["key"] for c in BLOCK_CASES])
def test_rtn_and_opt_rtn_layer_quantizers_equal_intels_block_fp8(case: dict) -> None:
    weight = RTN[f"in.{case['input']}.{case['input_dtype']}"]
    block = tuple(case["group_size"])
    scheme = PRESETS["FP8_BLOCK"].replace(act_bits=16) if block == (128, 128) else block_scheme(block)
    assert scheme.block_shape == block
    out, quant = quantize_weight(weight, scheme)
    assert same_bits(out, RTN[f"{case['key']}.qdq"])
    # one scale per tile, (row tiles, column tiles) as Intel returns it, in the weight's dtype
    assert same_bits(quant.scale, RTN[f"{case['key']}.scale"])
    assert torch.equal(quant.zero, torch.zeros(quant.scale.shape, dtype=torch.int32))
    opt_out, opt_quant = opt_rtn_weight(weight, scheme)  # no search for FP8: plain RTN
    assert same_bits(opt_out, out) and same_bits(opt_quant.scale, quant.scale)


def test_the_rtn_fixture_has_edge_tiles_in_both_dimensions() -> None:
    shapes = {
        (tuple(RTN[f"in.{c['input']}.{c['input_dtype']}"].shape), tuple(c["group_size"])) for c in BLOCK_CASES
    }
    assert ((130, 136), (128, 128)) in shapes and ((40, 72), (16, 32)) in shapes
    assert all(s[0] % b[0] and s[1] % b[1] for s, b in shapes)


# --- SignRound: Intel's tile tuning ---


def _tuned(dtype_name: str) -> tuple[TunedLinear, torch.Tensor]:
    weight = TUNING[f"in.{dtype_name}"]
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
    linear.weight.data.copy_(weight)
    tuned = TunedLinear(linear, block_scheme(TUNING_BLOCK), tune_minmax=True)
    # Intel's v is (row tiles, column tiles, rows, columns) and max_scale (row tiles, column tiles)
    tuned.v.data.copy_(TUNING["v"].reshape(tuned.v.shape))
    tuned.max_scale.data.copy_(TUNING["max_scale"].reshape(-1))
    return tuned, weight


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float16"])
def test_tuning_values_and_gradients_equal_intels(dtype_name: str) -> None:
    tuned, _ = _tuned(dtype_name)
    assert tuned.v.shape == (9, 16 * 32) and tuned.max_scale.shape == (9,)  # per weight, per tile
    out = tuned.qdq_weight()
    (out.float() * TUNING["upstream"]).sum().backward()
    assert same_bits(out, TUNING[f"{dtype_name}.qdq"])
    assert torch.equal(tuned.v.grad.reshape(TUNING["v"].shape), TUNING[f"{dtype_name}.grad_v"])
    # A tile's factor gets the sum of its 512 weights' contributions: Intel sums them over a
    # permuted (non-contiguous) 4-D view, we over one contiguous row, so the float32 sums differ
    # in their last bits (measured: at most 7e-7, 6e-6 relative); every term is the same (grad_v).
    grad = tuned.max_scale.grad.reshape(3, 3)
    torch.testing.assert_close(grad, TUNING[f"{dtype_name}.grad_max_scale"], rtol=2e-5, atol=2e-6)
    assert (grad == 0).sum() == 2  # the all-zero tile and the tiny one (scale at its floor) get none


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float16"])
def test_the_final_qdq_of_tuned_parameters_equals_intels(dtype_name: str) -> None:
    tuned, weight = _tuned(dtype_name)
    params = TunedParams(tuned.v.detach(), tuned.min_scale.detach(), tuned.max_scale.detach())
    out, quant = qdq_with(weight, tuned.scheme, params)
    assert same_bits(out, TUNING[f"{dtype_name}.qdq"])
    assert same_bits(quant.scale, TUNING[f"{dtype_name}.scale"])  # float32: the factor's dtype
