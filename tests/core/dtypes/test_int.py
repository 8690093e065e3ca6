"""Integer quantize-dequantize, checked against a plain per-group formula written out here."""

from __future__ import annotations

import math

import pytest
import torch

from autoround.dtypes import DTYPES, from_groups, to_groups
from autoround.layer_quant import codes_of, dequantize_codes, quantize_weight
from autoround.schemes import Scheme

INT = DTYPES["int"]


def reference_qdq(weight: torch.Tensor, bits: int, group: int, sym: bool) -> torch.Tensor:
    """Intel's conventions, one group at a time in float64 for the rounding-free parts."""
    out = torch.empty_like(weight, dtype=torch.float32)
    rows, cols = weight.shape
    width = cols if group == -1 or cols < group else group
    for r in range(rows):
        for start in range(0, cols, width):
            g = weight[r, start : start + width].float()
            lo, hi = min(g.min().item(), 0.0), max(g.max().item(), 0.0)
            if sym:
                m = -hi if hi >= -lo else -lo
                scale = torch.tensor(m / 2 ** (bits - 1)).half()
                scale = scale.clamp(max=-1e-5) if scale < 0 else scale.clamp(min=1e-5)
                q = torch.clamp(torch.round(g / scale.float()), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                out[r, start : start + width] = scale.float() * q
            else:
                scale = torch.tensor((hi - lo) / (2**bits - 1)).half().clamp(min=1e-5).float()
                zero = torch.round(-lo / scale)
                q = torch.clamp(torch.round(g / scale) + zero, 0, 2**bits - 1)
                out[r, start : start + width] = scale * (q - zero)
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize(("cols", "group"), [(64, 32), (80, 32), (100, -1), (20, 32)])
def test_qdq_matches_the_plain_formula(bits: int, sym: bool, cols: int, group: int) -> None:
    torch.manual_seed(bits * 100 + cols)
    weight = torch.randn(6, cols) * 0.05
    qdq, quant = quantize_weight(weight, Scheme(bits=bits, group_size=group, sym=sym))
    torch.testing.assert_close(qdq, reference_qdq(weight, bits, group, sym), rtol=0, atol=1e-7)
    assert quant.scale.dtype == torch.float16
    assert quant.scale.shape == (6, 1 if group == -1 or cols < group else math.ceil(cols / group))


def test_symmetric_full_range_uses_the_most_negative_level_for_the_largest_magnitude() -> None:
    weight = torch.tensor([[0.8, -0.2, 0.1, 0.0]])
    qdq, quant = quantize_weight(weight, Scheme(bits=4, group_size=-1))
    assert quant.scale.item() < 0, "positive side wins: the scale is negative (Intel's sign trick)"
    codes = codes_of(qdq, quant)
    assert codes[0, 0].item() == 0  # 0.8 maps to q = -8, stored code 0
    assert quant.zero.unique().tolist() == [8]


def test_asymmetric_zero_point_and_codes_cover_the_range() -> None:
    weight = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    qdq, quant = quantize_weight(weight, Scheme(bits=2, group_size=-1, sym=False))
    codes = codes_of(qdq, quant)
    assert codes.min().item() == 0 and codes.max().item() == 3
    assert quant.zero.item() == 1  # round(1.0 / (3.0 / 3))


def test_partial_last_group_is_padded_then_dropped() -> None:
    weight = torch.randn(3, 80)
    grouped, layout = to_groups(weight, 32)
    assert grouped.shape == (9, 32) and layout.pad == 16 and layout.groups_per_row == 3
    assert torch.equal(from_groups(grouped, layout), weight)


def test_per_tensor_group_has_one_scale_for_all_rows() -> None:
    weight = torch.randn(4, 64)
    _, quant = quantize_weight(weight, Scheme(bits=4, group_size=0))
    assert quant.scale.shape == (4, 1) and quant.scale.unique().numel() == 1


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_codes_recovered_from_a_bf16_qdq_weight_dequantize_to_it(bits: int) -> None:
    torch.manual_seed(bits)
    weight = (torch.randn(8, 96) * 0.02).bfloat16()
    qdq, quant = quantize_weight(weight, Scheme(bits=bits, group_size=64, sym=False))
    codes = codes_of(qdq, quant)
    assert torch.equal(dequantize_codes(codes, quant, torch.bfloat16), qdq)


def test_rounding_offset_and_clipping_factors_shift_the_result() -> None:
    torch.manual_seed(0)
    weight = torch.randn(2, 64)
    grouped, _ = to_groups(weight, 32)
    base, _ = INT.qdq(grouped, 4, True)
    shifted, _ = INT.qdq(grouped, 4, True, v=torch.full_like(grouped, 0.49))
    clipped, _ = INT.qdq(grouped, 4, True, min_scale=torch.full((4,), 0.5), max_scale=torch.full((4,), 0.5))
    assert not torch.equal(base, shifted) and not torch.equal(base, clipped)
    assert clipped.abs().max() < base.abs().max()


def test_rounding_is_straight_through_for_gradients() -> None:
    grouped = torch.randn(4, 32)
    v = torch.zeros_like(grouped, requires_grad=True)
    qdq, _ = INT.qdq(grouped, 4, True, v=v)
    qdq.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
