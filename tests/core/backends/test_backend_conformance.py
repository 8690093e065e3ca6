"""Every registered backend against dequantize-then-matmul, on every layer it claims to serve."""

from __future__ import annotations

import pytest
import torch

from autoround.backends import BACKENDS
from autoround.schemes import Scheme

BITS = (2, 3, 4, 8)
GROUPS = (32, 64, 128, -1)
# in=96 and 160 leave a partial last group at 64 and 128; out=32 keeps 3-bit zeros whole words.
SHAPES = ((96, 32), (160, 48))
ROWS = (1, 5, 33)


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize("name", list(BACKENDS))
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group", GROUPS)
def test_backend_matches_dequantize_then_matmul(make_packed, name, bits, sym, group) -> None:
    scheme = Scheme(bits=bits, group_size=group, sym=sym)
    backend, served = BACKENDS[name], 0
    for in_features, out_features in SHAPES:
        if bits == 3 and out_features % 32:
            continue
        if backend.supports(scheme, in_features, out_features, torch.device("cpu"), None):
            continue
        served += 1
        layer, dense = make_packed(
            scheme, in_features, out_features, name, seed=bits + in_features, bias=True
        )
        gen = torch.Generator().manual_seed(1)
        for rows in ROWS:
            x = torch.randn(rows, in_features, generator=gen)
            ref = x @ dense.t() + layer.bias.float()
            assert _rel_error(layer(x), ref) < backend.fp32_tolerance, (rows, in_features)
            xb = x.bfloat16()
            out = layer(xb)
            assert out.dtype == torch.bfloat16
            assert _rel_error(out, xb.float() @ dense.t() + layer.bias.float()) < 1e-2, (rows, in_features)
    if not served:
        pytest.skip(f"{name} serves none of these layers here")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_batched_inputs_keep_their_leading_dims(make_packed, name) -> None:
    scheme = Scheme(bits=4, group_size=32)
    if BACKENDS[name].supports(scheme, 64, 32, torch.device("cpu"), None):
        pytest.skip(f"{name} does not serve this layer here")
    layer, dense = make_packed(scheme, 64, 32, name)
    x = torch.randn(2, 3, 64)
    out = layer(x)
    assert out.shape == (2, 3, 32)
    assert _rel_error(out, x @ dense.t()) < BACKENDS[name].fp32_tolerance
