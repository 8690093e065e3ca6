"""The Triton GEMM against its plain-torch twin, through the interpreter where there is no GPU.

Every regime (decode with raw-code products and split K, mid-size tiles, dequantize + dense GEMM)
and every code path inside the kernel (one group per tile or several, word fan-out by reshape or
by repeated loads) is forced through an explicit configuration, so the interpreter checks them
all whatever the heuristic would pick.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module is first imported
pytest.importorskip("triton", exc_type=ImportError)

from autoround.formats.gptq_layout import pack_layer
from autoround.kernels import reference
from autoround.kernels.triton_configs import KernelConfig, heuristic_config
from autoround.kernels.triton_gemm import dequantize, quant_matmul
from autoround.layer_quant import group_width, quantize_weight
from autoround.schemes import Scheme

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CONFIGS = {
    "gemv": KernelConfig(block_m=1, block_n=32, block_k=32, gemv=True),
    "gemv-split-k": KernelConfig(block_m=1, block_n=64, block_k=32, split_k=3, gemv=True),
    "decode-row": KernelConfig(block_m=1, block_n=32, block_k=32, split_k=1),
    "decode-split-k": KernelConfig(block_m=1, block_n=32, block_k=32, split_k=3),
    "decode-reshape": KernelConfig(block_m=1, block_n=32, block_k=64, split_k=2, unpack_reshape=True),
    "decode-dot": KernelConfig(block_m=16, block_n=32, block_k=32, split_k=2),
    "mid": KernelConfig(block_m=16, block_n=32, block_k=32, fold_affine=False),
    "mid-groups-per-tile": KernelConfig(block_m=16, block_n=32, block_k=128, fold_affine=False),
    "dense": KernelConfig(dense=True),
}


def _packed(scheme: Scheme, in_features: int, out_features: int) -> dict[str, torch.Tensor]:
    weight = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(scheme.bits))
    qdq, quant = quantize_weight(weight, scheme)
    return {k: v.to(DEVICE) for k, v in pack_layer(qdq, quant, 0 if not scheme.sym else 1).items()}


def _args(bits: int, sym: bool, group: int, in_features: int, out_features: int = 80) -> tuple:
    scheme = Scheme(bits=bits, group_size=group, sym=sym)
    t = _packed(scheme, in_features, out_features)  # 80 outputs: a partial BLOCK_N tile
    return (
        t["qweight"],
        t["qzeros"],
        t["scales"],
        bits,
        group_width(scheme, in_features),
        0 if not sym else 1,
    )


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize(("group", "in_features"), [(32, 64), (64, 96), (128, 160), (-1, 96)])
@pytest.mark.parametrize("rows", [1, 5, 33])
def test_kernel_matches_its_twin(bits, sym, group, in_features, rows) -> None:
    args = _args(bits, sym, group, in_features)
    x = torch.randn(rows, in_features, device=DEVICE)
    ref = reference.quant_matmul(x, *args)
    out = quant_matmul(x, *args)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert _rel_err(out, ref) < 1e-4


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize(("group", "in_features"), [(32, 96), (64, 160), (128, 320)])
def test_every_kernel_path_matches_the_twin(name, bits, group, in_features) -> None:
    """K not a multiple of the tile, a partial last group, asymmetric zero points."""
    args = _args(bits, False, group, in_features)
    rows = 1 if CONFIGS[name].block_m == 1 else 7
    x = torch.randn(rows, in_features, device=DEVICE)
    out = quant_matmul(x, *args, config=CONFIGS[name])
    assert _rel_err(out, reference.quant_matmul(x, *args)) < 1e-4


@pytest.mark.parametrize("name", ["gemv-split-k", "decode-split-k", "decode-dot", "mid", "dense"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_activations_stay_in_their_dtype(name, dtype) -> None:
    args = _args(4, True, 64, 192)
    x = torch.randn(2, 3, 192, device=DEVICE).to(dtype)
    if CONFIGS[name].block_m == 1:
        x = x[:1, :1]
    out = quant_matmul(x, *args, config=CONFIGS[name])
    assert out.shape == (*x.shape[:-1], 80) and out.dtype == dtype
    assert _rel_err(out, reference.quant_matmul(x, *args)) < 1e-2


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
def test_dequantize_kernel_is_exact(bits, sym) -> None:
    args = _args(bits, sym, 64, 160)
    assert torch.equal(dequantize(*args, dtype=torch.float32), reference.dequantize(*args))


def test_heuristic_picks_the_regime_by_rows() -> None:
    def problem(m: int) -> tuple:
        return (m, 14336, 4096, 4, 128, torch.bfloat16)

    assert heuristic_config(problem(1)).gemv
    assert heuristic_config(problem(16)).block_m == 16
    assert not heuristic_config(problem(64)).fold_affine and not heuristic_config(problem(64)).dense
    assert heuristic_config(problem(4096)).dense
    narrow = heuristic_config((1, 1024, 4096, 4, 128, torch.bfloat16))
    assert narrow.split_k > 1  # 16 column tiles alone would leave most of the chip idle


@pytest.mark.parametrize(
    ("field", "value"), [("block_m", 8), ("block_n", 96), ("block_k", 16), ("split_k", 0)]
)
def test_bad_configs_are_refused_naming_the_field(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        KernelConfig(**{field: value})


def test_gemv_refuses_more_than_one_row() -> None:
    with pytest.raises(ValueError, match="block_m"):
        KernelConfig(block_m=16, gemv=True)
    args = _args(4, True, 64, 192)
    with pytest.raises(ValueError, match="one row"):
        quant_matmul(torch.randn(2, 192, device=DEVICE), *args, config=KernelConfig(block_m=1, gemv=True))


def test_three_bit_is_refused() -> None:
    with pytest.raises(ValueError, match="bits"):
        quant_matmul(torch.randn(1, 96), *[torch.empty(0)] * 3, bits=3, group_width=32, zero_offset=1)
