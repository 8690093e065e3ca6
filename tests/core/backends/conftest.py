"""Packed layers built from random weights, and their dense quantize-dequantized twin."""

from __future__ import annotations

import os

import pytest
import torch

# Triton kernels are checked through the interpreter on machines without CUDA; the flag must be
# set before the kernel module is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from autoround.formats.gptq_layout import pack_layer
from autoround.layer_quant import quantize_weight
from autoround.nn import QuantLinear
from autoround.schemes import Scheme


def packed_layer(
    scheme: Scheme, in_features: int, out_features: int, backend: str, seed: int = 0, bias: bool = False
) -> tuple[QuantLinear, torch.Tensor]:
    """A QuantLinear on ``backend`` and the dense (out, in) weight it holds, in fp32."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=gen)
    qdq, quant = quantize_weight(weight, scheme)
    zero_offset = 1 if scheme.sym else 0
    tensors = pack_layer(qdq, quant, zero_offset)
    layer = QuantLinear(in_features, out_features, scheme, zero_offset, bias=bias, backend=backend)
    if bias:
        tensors["bias"] = torch.randn(out_features, generator=gen).half()
    layer.load_state_dict(tensors)
    return layer, qdq


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs with the shared ``one_thread`` fixture."""


@pytest.fixture
def make_packed():
    return packed_layer
