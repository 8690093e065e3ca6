"""Plain-torch twins of the kernels: the numerics every kernel and backend is checked against.

All functions take the checkpoint's GPTQ tensors as they are stored: ``qweight`` int32
(in * bits / 32, out), ``qzeros`` int32 (groups, out * bits / 32), ``scales`` (groups, out), and
the ``zero_offset`` the packing format subtracted from zero points before storing them.
"""

from __future__ import annotations

import torch

from autoround.packing import unpack_int32


def group_index(in_features: int, group_width: int, device: torch.device | None = None) -> torch.Tensor:
    """The group of every input row: ``k // group_width`` (a partial last group included)."""
    return torch.arange(in_features, device=device) // group_width


def unpack_zeros(qzeros: torch.Tensor, bits: int, out_features: int, zero_offset: int) -> torch.Tensor:
    """True integer zero points (groups, out) as int32."""
    zeros = unpack_int32(qzeros, bits, dim=1)[:, :out_features].to(torch.int32)
    return zeros + zero_offset


def dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
) -> torch.Tensor:
    """The dense (in, out) weight in fp32: ``scale * (code - zero)`` per group."""
    codes = unpack_int32(qweight, bits, dim=0).to(torch.int32)
    in_features, out_features = codes.shape
    zeros = unpack_zeros(qzeros, bits, out_features, zero_offset)
    g_idx = group_index(in_features, group_width, qweight.device)
    return (codes - zeros[g_idx]).float() * scales[g_idx].float()


def quant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
) -> torch.Tensor:
    """``x @ W`` for x (..., in) and the packed (in, out) weight; computed in fp32, returned in x's dtype.

    The twin of :func:`autoround.kernels.triton_gemm.quant_matmul`.
    """
    weight = dequantize(qweight, qzeros, scales, bits, group_width, zero_offset)
    return (x.float() @ weight).to(x.dtype)
