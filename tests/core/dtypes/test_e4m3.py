"""FP8 E4M3 rounding (``autoround.dtypes.e4m3.e4m3_values``): float32 arithmetic that gives torch's
own ``float8_e4m3fn`` cast, float for float, on every float32 next to an E4M3 value or a midpoint
between two, on a stride through every float32 bit pattern, and on the special values."""

from __future__ import annotations

import pytest
import torch

from autoround.dtypes.e4m3 import e4m3_values


def _cast(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float8_e4m3fn).to(x.dtype)


def _assert_same_floats(ours: torch.Tensor, cast: torch.Tensor) -> None:
    assert ours.dtype == cast.dtype
    same = (ours == cast) | (ours.isnan() & cast.isnan())
    assert bool(same.all()), (ours[~same][:5], cast[~same][:5])
    # -0.0 where the cast gives -0.0
    assert torch.equal(torch.signbit(ours), torch.signbit(cast))


def _near_every_e4m3_value_and_midpoint() -> torch.Tensor:
    """Every E4M3 magnitude and every midpoint between neighbours, with 8 float32 neighbours on
    each side, both signs."""
    grid = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    grid = torch.cat([grid, torch.tensor([464.0, 480.0, 512.0])])  # past the largest, 448
    points = torch.cat([grid, (grid[1:] + grid[:-1]) / 2])
    bits = points.view(torch.int32).unsqueeze(-1) + torch.arange(-8, 9, dtype=torch.int32)
    near = bits[bits >= 0].view(torch.float32)
    return torch.cat([near, -near])


def test_every_float_near_an_e4m3_value_or_midpoint_rounds_as_the_cast() -> None:
    x = _near_every_e4m3_value_and_midpoint()
    _assert_same_floats(e4m3_values(x), _cast(x))


@pytest.mark.parametrize("offset", range(3))
def test_a_stride_through_every_float32_rounds_as_the_cast(offset: int) -> None:
    bits = torch.arange(offset, 2**32, 4099, dtype=torch.int64)
    x = (bits - (bits >= 2**31).long() * 2**32).to(torch.int32).view(torch.float32)
    _assert_same_floats(e4m3_values(x), _cast(x))


def test_special_values_and_other_dtypes() -> None:
    x = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 2.0**-149, -(2.0**-10), 1e30])
    _assert_same_floats(e4m3_values(x), _cast(x))
    for dtype in (torch.bfloat16, torch.float16):
        y = (torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 100).to(dtype)
        _assert_same_floats(e4m3_values(y), _cast(y))
