"""The fused MX and NVFP4 tuning steps (autoround.dtypes.float_fused) against the plain-autograd
formulation they replace (``mx_tuning_qdq_reference``, ``nv_tuning_qdq_reference``), on random
weights with all-zero groups, tiny and spiky rows, in float32 and bfloat16: the same values bit
for bit; NVFP4's gradients for ``v`` and the factors bit for bit, MX's (written out as
``q / y``, not replayed node by node) within float32 rounding, with the same signs for ``v``."""

from __future__ import annotations

import pytest
import torch

from autoround.dtypes.mx_elements import E2M1, E2M3, E3M2, E4M3, E5M2, MxElement
from autoround.dtypes.mx_int import MX_INT_ELEMENTS
from autoround.dtypes.mx_tuning import group_amax, mx_tuning_qdq, mx_tuning_qdq_reference
from autoround.dtypes.nv_fp import nv_tuning_qdq, nv_tuning_qdq_reference

DTYPES = (torch.float32, torch.bfloat16)
MX_ELEMENTS = {"e2m1": E2M1, "e2m3": E2M3, "e3m2": E3M2, "e4m3": E4M3, "e5m2": E5M2} | {
    f"int{bits}": element for bits, element in MX_INT_ELEMENTS.items()
}


def _weight(seed: int, group: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows * 8, group) groups of a seeded weight: ordinary rows, an all-zero group, a tiny row,
    a spiky row, a row of exact grid values and ties."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 8 * group, generator=gen) * 0.03
    w[1, :group] = 0.0  # an all-zero group
    w[2] *= 1e-30  # tiny (subnormal shared scales, underflowing block scales)
    w[3, torch.randint(0, 8 * group, (5,), generator=gen)] = 4.0  # spikes
    w[4] = torch.arange(8 * group) % 13 * 0.25 - 1.5  # ties and exact grid values
    w[5, 3 : 3 + group] = 0.0  # zero runs across groups
    return w.to(dtype).reshape(-1, group)


def _leaves(grouped: torch.Tensor, seed: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets ``v`` in [-0.5, 0.5] (some exactly 0) and factors around 1."""
    gen = torch.Generator().manual_seed(seed + 1000)
    v = torch.rand(grouped.shape, generator=gen) - 0.5
    v[::3] = 0.0
    factor = 1.0 + spread * (torch.rand(grouped.shape[0], generator=gen) - 0.5)
    return v, factor


def _run(fn, v: torch.Tensor, factor: torch.Tensor, upstream: torch.Tensor):
    """Values and the gradients for ``v`` and ``factor`` of ``fn(v, factor)``."""
    v = v.clone().requires_grad_(True)
    factor = factor.clone().requires_grad_(True)
    out = fn(v, factor)
    (out.float() * upstream).sum().backward()
    return out.detach(), v.grad, factor.grad


def _assert_close_gradients(fused, reference) -> None:
    """Values bit for bit; ``v``'s gradients within float32 rounding and of the same sign; the
    factor's, per-group sums whose exact terms often cancel, within float32 rounding of the
    largest (compared where autograd's is finite: E5M2's subnormal shared scales of a 1e-30 row
    overflow ``w / scale / scale`` in torch's division backward, the written-out form does not)."""
    values, grad_v, grad_factor = fused
    ref_values, ref_v, ref_factor = reference
    torch.testing.assert_close(values, ref_values, rtol=0, atol=0, equal_nan=True)
    assert torch.isfinite(grad_v).all() and torch.isfinite(grad_factor).all()
    torch.testing.assert_close(grad_v, ref_v, rtol=2e-6, atol=0)
    assert torch.equal(torch.sign(grad_v), torch.sign(ref_v))
    finite = torch.isfinite(ref_factor)
    atol = 2e-6 * float(ref_factor[finite].abs().max())
    torch.testing.assert_close(grad_factor[finite], ref_factor[finite], rtol=0, atol=atol)


def _assert_same(fused, reference) -> None:
    for name, ours, ref in zip(("values", "grad_v", "grad_factor"), fused, reference, strict=True):
        assert ours is not None and ref is not None, name
        assert ours.dtype == ref.dtype, name
        # exactly equal, NaN where autograd's is NaN (E5M2's subnormal shared scales of a 1e-30
        # row overflow ``w / scale / scale`` in torch's own division backward)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True, msg=name)
        assert torch.equal(torch.isnan(ours), torch.isnan(ref)), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rounding", ["floor", "rceil"])
@pytest.mark.parametrize("name", list(MX_ELEMENTS))
@pytest.mark.parametrize("searched", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_mx_fused_step_equals_autograd_up_to_rounding(
    dtype: torch.dtype, rounding: str, name: str, searched: bool, seed: int
) -> None:
    element: MxElement = MX_ELEMENTS[name]
    grouped = _weight(seed, 32, dtype)
    amax = group_amax(grouped)
    v, factor = _leaves(grouped, seed, 1.0)
    upstream = torch.randn(grouped.shape, generator=torch.Generator().manual_seed(seed + 7))
    base = torch.tensor([0.5, 1.0, 2.0])[torch.arange(grouped.shape[0]) % 3].reshape(-1, 1)

    def step(fn):
        if searched:
            return lambda v_, f_: fn(grouped, amax, element, rounding, v_, base * f_.reshape(-1, 1))
        return lambda v_, f_: fn(grouped, amax, element, rounding, v_, f_)

    _assert_close_gradients(
        _run(step(mx_tuning_qdq), v, factor, upstream),
        _run(step(mx_tuning_qdq_reference), v, factor, upstream),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("searched", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_nv_fused_step_equals_autograd_bit_for_bit(
    dtype: torch.dtype, shared: bool, searched: bool, seed: int
) -> None:
    grouped = _weight(seed, 16, dtype)
    amax = grouped.abs().amax(dim=-1, keepdim=True).float()
    tensor_amax = amax.max() * 1.7 if shared else None
    v, factor = _leaves(grouped, seed, 1.5)
    upstream = torch.randn(grouped.shape, generator=torch.Generator().manual_seed(seed + 7))
    base = 0.5 + torch.rand(grouped.shape[0], 1, generator=torch.Generator().manual_seed(seed))

    def step(fn):
        if searched:
            return lambda v_, f_: fn(grouped, amax, v_, f_.reshape(-1, 1) * base, tensor_amax)
        return lambda v_, f_: fn(grouped, amax, v_, f_, tensor_amax)

    _assert_same(
        _run(step(nv_tuning_qdq), v, factor, upstream),
        _run(step(nv_tuning_qdq_reference), v, factor, upstream),
    )


def test_values_without_gradients_and_v_alone() -> None:
    """Under no_grad, and with only ``v`` requiring a gradient, the fused steps still agree."""
    grouped = _weight(9, 32, torch.float32)
    amax = group_amax(grouped)
    v, factor = _leaves(grouped, 9, 1.0)
    with torch.no_grad():
        assert torch.equal(
            mx_tuning_qdq(grouped, amax, E2M1, "floor", v, factor),
            mx_tuning_qdq_reference(grouped, amax, E2M1, "floor", v, factor),
        )
    leaf = v.clone().requires_grad_(True)
    mx_tuning_qdq(grouped, amax, E2M1, "floor", leaf, 0.9).sum().backward()
    ref = v.clone().requires_grad_(True)
    mx_tuning_qdq_reference(grouped, amax, E2M1, "floor", ref, 0.9).sum().backward()
    assert leaf.grad is not None and ref.grad is not None
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=2e-6, atol=0)
