"""The cpu backend's paths against dequantize-then-matmul in fp32, and what it refuses.

The reference is the quantizer's own quantize-dequantized weight (``scale * (code - zero)`` in
plain torch), never the backend's unpacking.
"""

from __future__ import annotations

import pytest
import torch

from autoround.backends.cpu import CpuBackend, dense_forward
from autoround.backends.cpu_layout import op_geometry
from autoround.schemes import Scheme

# (in_features, group): full groups, a partial last group (160 = 128 + 32, 576 = 4 * 128 + 64,
# 96 = 64 + 32), one group per row, and a group wider than the row.
GEOMETRIES = ((128, 32), (160, 128), (576, 128), (96, 64), (160, -1), (96, 256))
CASES = [(bits, sym, k, g) for bits in (2, 3, 4, 8) for sym in (True, False) for k, g in GEOMETRIES]


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize(("bits", "sym", "in_features", "group"), CASES)
def test_fp32_within_1e_3_and_bf16_within_1e_2(make_packed, bits, sym, in_features, group) -> None:
    scheme = Scheme(bits=bits, group_size=group, sym=sym)
    layer, dense = make_packed(scheme, in_features, 32, "cpu", seed=bits)
    gen = torch.Generator().manual_seed(7)
    for rows in (1, 17, 300):  # 300 rows: bf16/fp16 calls take the dense blockwise path
        x = torch.randn(rows, in_features, generator=gen)
        out = layer(x)
        assert out.dtype == torch.float32
        assert _rel(out, x @ dense.t()) < 1e-3
        xb = x.bfloat16()
        outb = layer(xb)
        assert outb.dtype == torch.bfloat16
        assert _rel(outb, xb.float() @ dense.t()) < 1e-2
        xh = x.half()
        assert _rel(layer(xh), xh.float() @ dense.t()) < 1e-2


def test_bf16_calls_use_the_int4_op_and_fp32_calls_cache_one_dense_weight(make_packed) -> None:
    layer, dense = make_packed(Scheme(bits=4, group_size=32), 64, 32, "cpu")
    layer(torch.randn(2, 64).bfloat16())
    assert layer.backend_state.dense is None
    layer(torch.randn(2, 64))
    cached = layer.backend_state.dense
    assert cached is not None and cached.dtype == torch.float32
    layer(torch.randn(3, 64))
    assert layer.backend_state.dense is cached
    torch.testing.assert_close(cached, dense.t(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_uncached_fp32_path_is_exact(make_packed, bits) -> None:
    layer, dense = make_packed(Scheme(bits=bits, group_size=64, sym=False), 160, 32, "cpu")
    x = torch.randn(5, 160)
    backend = CpuBackend(fp32_weight_cache=False)
    layer.prepare()
    assert _rel(backend.forward(layer, x), x @ dense.t()) < 1e-5
    assert layer.backend_state.dense is None
    assert _rel(dense_forward(layer, x), x @ dense.t()) < 1e-5


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fp32_through_the_int4_op_when_asked(make_packed, bits) -> None:
    layer, dense = make_packed(Scheme(bits=bits, group_size=128, sym=False), 576, 32, "cpu")
    backend = CpuBackend(fp32_activations="bf16")
    layer.prepare()
    x = torch.randn(4, 576)
    out = backend.forward(layer, x)
    assert out.dtype == torch.float32 and layer.backend_state.dense is None
    assert 1e-4 < _rel(out, x @ dense.t()) < backend.fp32_tolerance


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_many_bf16_rows_dequantize_blocks_and_cache_nothing(make_packed, dtype) -> None:
    layer, dense = make_packed(Scheme(bits=4, group_size=32, sym=False), 64, 32, "cpu")
    backend = CpuBackend(dense_min_rows=8)
    backend.dense_dtype = dtype  # both compute dtypes, whichever this CPU picks by default
    layer.prepare()
    xb = torch.randn(8, 64).bfloat16()
    out = backend.forward(layer, xb)
    assert out.dtype == torch.bfloat16 and layer.backend_state.dense is None
    assert _rel(out, xb.float() @ dense.t()) < 1e-2
    assert _rel(backend.forward(layer, xb[:7]), xb[:7].float() @ dense.t()) < 1e-2  # the int4 op


def test_partial_groups_need_no_padding() -> None:
    assert op_geometry(128, 576) == (64, 576)
    assert op_geometry(128, 160) == (32, 160)
    assert op_geometry(64, 4096) == (64, 4096)
    assert op_geometry(48, 48) == (64, 64)  # one group per row: K padded to a multiple of 32
    assert op_geometry(48, 96) is None


def test_symmetric_zeros_fold_to_exactly_zero(make_packed) -> None:
    layer, _ = make_packed(Scheme(bits=2, group_size=32), 64, 32, "cpu")
    state = CpuBackend().prepare(layer)
    assert torch.all(state.planes[0].scales_zeros[..., 1] == 0)


def test_bad_fp32_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'exact' or 'bf16'"):
        CpuBackend(fp32_activations="fast")  # type: ignore[arg-type]


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
