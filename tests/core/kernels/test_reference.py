"""The kernels' plain-torch twin against the format's own unpacking and dequantization."""

from __future__ import annotations

import pytest
import torch

from autoround.formats.gptq_layout import pack_layer, unpack_layer
from autoround.kernels import reference
from autoround.layer_quant import dequantize_codes, group_width, quantize_weight
from autoround.schemes import Scheme


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group", [32, 64, -1])
def test_dequantize_matches_unpack_layer(bits, sym, group) -> None:
    scheme = Scheme(bits=bits, group_size=group, sym=sym)
    qdq, quant = quantize_weight(torch.randn(32, 96), scheme)
    offset = 1 if sym else 0
    tensors = pack_layer(qdq, quant, offset)
    codes, unpacked = unpack_layer(tensors, scheme, 96, 32, offset)
    expected = dequantize_codes(codes, unpacked, torch.float32).t()
    got = reference.dequantize(
        tensors["qweight"], tensors["qzeros"], tensors["scales"], bits, group_width(scheme, 96), offset
    )
    assert torch.equal(got, expected)
    assert torch.equal(got.t(), qdq)
