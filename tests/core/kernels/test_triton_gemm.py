"""The Triton GEMM against its plain-torch twin, through the interpreter where there is no GPU."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module is first imported
pytest.importorskip("triton", exc_type=ImportError)

from autoround.formats.gptq_layout import pack_layer
from autoround.kernels import reference
from autoround.kernels.triton_gemm import quant_matmul
from autoround.quantizer import group_width, quantize_weight
from autoround.schemes import Scheme

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _packed(scheme: Scheme, in_features: int, out_features: int) -> dict[str, torch.Tensor]:
    weight = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(scheme.bits))
    qdq, quant = quantize_weight(weight, scheme)
    return {k: v.to(DEVICE) for k, v in pack_layer(qdq, quant, 0 if not scheme.sym else 1).items()}


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize(("group", "in_features"), [(32, 64), (64, 96), (128, 160), (-1, 96)])
@pytest.mark.parametrize("rows", [1, 5, 33])
def test_kernel_matches_its_twin(bits, sym, group, in_features, rows) -> None:
    scheme = Scheme(bits=bits, group_size=group, sym=sym)
    t = _packed(scheme, in_features, 80)  # 80 outputs: a partial BLOCK_N tile
    args = (
        t["qweight"],
        t["qzeros"],
        t["scales"],
        bits,
        group_width(scheme, in_features),
        0 if not sym else 1,
    )
    x = torch.randn(rows, in_features, device=DEVICE)
    ref = reference.quant_matmul(x, *args)
    out = quant_matmul(x, *args)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert float((out - ref).norm() / ref.norm()) < 1e-4


def test_kernel_keeps_half_precision_activations() -> None:
    scheme = Scheme(bits=4, group_size=32)
    t = _packed(scheme, 64, 32)
    x = torch.randn(2, 3, 64, device=DEVICE).bfloat16()
    out = quant_matmul(x, t["qweight"], t["qzeros"], t["scales"], 4, 32, 1)
    ref = reference.quant_matmul(x, t["qweight"], t["qzeros"], t["scales"], 4, 32, 1)
    assert out.shape == (2, 3, 32) and out.dtype == torch.bfloat16
    assert float((out.float() - ref.float()).norm() / ref.float().norm()) < 1e-2


def test_three_bit_is_refused() -> None:
    with pytest.raises(ValueError, match="bits"):
        quant_matmul(torch.randn(1, 96), *[torch.empty(0)] * 3, bits=3, group_width=32, zero_offset=1)
