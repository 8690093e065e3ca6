"""The cpu backend's two paths, each against dequantize-then-matmul, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from autoround.backends.cpu import CpuBackend, _dense_forward
from autoround.schemes import Scheme

CASES = [
    (bits, sym, group, in_features)
    for bits in (2, 3, 4, 8)
    for sym in (True, False)
    for group in (32, 128, -1)
    for in_features in (96, 160)
]


@pytest.mark.parametrize(("bits", "sym", "group", "in_features"), CASES)
def test_dense_path_is_exact(make_packed, bits, sym, group, in_features) -> None:
    layer, dense = make_packed(Scheme(bits=bits, group_size=group, sym=sym), in_features, 32, "cpu")
    x = torch.randn(40, in_features)
    ref = x @ dense.t()
    assert torch.allclose(_dense_forward(layer, x), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("bits", "sym", "group", "in_features"), CASES[::3])
def test_int4_op_in_fp32_is_exact(make_packed, bits, sym, group, in_features) -> None:
    layer, dense = make_packed(Scheme(bits=bits, group_size=group, sym=sym), in_features, 32, "cpu")
    exact = CpuBackend(small_m_dtype=torch.float32)
    x = torch.randn(3, in_features)
    out = exact._int4_forward(exact.prepare(layer), x)
    assert torch.allclose(out, x @ dense.t(), rtol=1e-4, atol=1e-4)


def test_symmetric_zeros_fold_to_exactly_zero(make_packed) -> None:
    layer, _ = make_packed(Scheme(bits=2, group_size=32), 64, 32, "cpu")
    state = CpuBackend().prepare(layer)
    assert torch.all(state.planes[0].scales_zeros[..., 1] == 0)


@pytest.mark.parametrize(
    ("scheme", "shape", "device", "message"),
    [
        (Scheme(bits=4, group_size=16), (64, 32), "cpu", "not a multiple of 32"),
        (Scheme(bits=4, group_size=48), (96, 32), "cpu", "not a multiple of 32"),
        (Scheme(bits=4, group_size=32), (64, 40), "cpu", "out_features=40"),
        (Scheme(bits=4, group_size=32), (64, 32), "cuda", "not the CPU"),
        (Scheme(bits=5, group_size=32), (64, 32), "cpu", "bits=5"),
    ],
)
def test_refusals_say_why(scheme, shape, device, message) -> None:
    reason = CpuBackend().supports(scheme, *shape, torch.device(device), None)
    assert reason is not None and message in reason
