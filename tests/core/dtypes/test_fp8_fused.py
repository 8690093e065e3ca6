"""The FP8 tuning step (autoround.dtypes.fp8_fused) against the plain-autograd formula it replaces
(Intel's ``e4m3_ste(clamp(x / scale + v, -448, 448)) * scale`` built from torch operations): the
same values and the same gradients for ``x``, ``v`` and ``scale``, bit for bit, for weight
groups (float32 and bfloat16, clamped values, zeros) and for a static activation (one scale)."""

from __future__ import annotations

import pytest
import torch

from autoround.dtypes.fp8_fused import fp8_tuning_qdq


def _reference(x: torch.Tensor, v: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    pre = x / scale + v if v is not None else x / scale
    clipped = torch.clip(pre, -448.0, 448.0)
    rounded = clipped.to(torch.float8_e4m3fn).to(clipped.dtype)
    return ((rounded - clipped).detach() + clipped) * scale


def _grads(fn, x, v, scale, upstream):
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, v, scale)]
    out = fn(*leaves)
    (out * upstream).sum().backward()
    return [out.detach()] + [t.grad if t is not None else None for t in leaves]


def _same(ours, ref) -> None:
    for a, b in zip(ours, ref, strict=True):
        if b is None:
            assert a is None
            continue
        assert a is not None and a.dtype == b.dtype
        # equal floats (a zero gradient's sign aside: autograd's where gives +0.0)
        assert torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_weight_groups_equal_autograd_bit_for_bit(dtype: torch.dtype, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(64, 32, generator=gen) * 0.05).to(dtype)
    x[3] = 0.0
    amax = x.float().abs().amax(-1, keepdim=True)
    # some factors above 1 push values past 448 (the clamp), some far below (subnormal codes)
    scale = (amax * (0.5 + torch.rand(64, 1, generator=gen)) / 448).clamp(min=1 / (448 * 512))
    v = torch.rand(64, 32, generator=gen) - 0.5
    v[::4] = 0.0
    upstream = torch.randn(64, 32, generator=gen)
    _same(_grads(fp8_tuning_qdq, x, v, scale, upstream), _grads(_reference, x, v, scale, upstream))


def test_a_static_activation_with_one_scale_equals_autograd_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4096, generator=gen) * 3
    scale = torch.tensor([[2.5 / 448]])
    upstream = torch.randn(1, 4096, generator=gen)
    _same(_grads(fp8_tuning_qdq, x, None, scale, upstream), _grads(_reference, x, None, scale, upstream))


def test_without_gradients_the_values_are_the_formulas() -> None:
    x = torch.randn(8, 32) * 0.1
    scale = x.abs().amax(-1, keepdim=True) / 448
    with torch.no_grad():
        assert torch.equal(fp8_tuning_qdq(x, None, scale), _reference(x, None, scale))
