"""Triton GEMM/GEMV over GPTQ-layout packed weights, dequantized in registers.

One program computes a (BLOCK_M, BLOCK_N) tile of ``x @ W``: for each K block it loads the
int32 words holding the codes, shifts and masks them, subtracts the group's zero point (unpacked
from ``qzeros`` the same way), multiplies by the group's scale and accumulates ``tl.dot`` in fp32.
Bits 2, 4 and 8 (no code crosses a word); 3-bit straddles words and is left to other backends.
Numerics are checked under ``TRITON_INTERPRET=1`` against :mod:`autoround.kernels.reference`;
speed is tuned on the GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: Bits whose codes never straddle an int32 word.
KERNEL_BITS = (2, 4, 8)


@triton.jit
def _quant_matmul_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, out_ptr,
    M, N, K, group_width, zero_offset,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_zg, stride_zn,
    stride_sg, stride_sn, stride_om, stride_on,
    BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    per_word: tl.constexpr = 32 // BITS
    mask_bits: tl.constexpr = (1 << BITS) - 1
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)  # tl.zeros is jitted: breaks late interpreting
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < K
        kn_ok = k_ok[:, None] & n_ok[None, :]
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
            mask=m_ok[:, None] & k_ok[None, :], other=0.0,
        ).to(tl.float32)  # fmt: skip
        words = tl.load(
            qw_ptr + (rk // per_word)[:, None] * stride_qk + rn[None, :] * stride_qn, mask=kn_ok, other=0
        )
        codes = (words >> ((rk % per_word) * BITS)[:, None]) & mask_bits
        group = rk // group_width
        scale = tl.load(s_ptr + group[:, None] * stride_sg + rn[None, :] * stride_sn, mask=kn_ok, other=0.0)
        zwords = tl.load(
            qz_ptr + group[:, None] * stride_zg + (rn // per_word)[None, :] * stride_zn, mask=kn_ok, other=0
        )
        zeros = ((zwords >> ((rn % per_word) * BITS)[None, :]) & mask_bits) + zero_offset
        weight = (codes - zeros).to(tl.float32) * scale.to(tl.float32)
        acc += tl.dot(x, weight, input_precision="ieee")
    out = out_ptr + rm[:, None] * stride_om + rn[None, :] * stride_on
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def quant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
    block: tuple[int, int, int] = (16, 64, 32),
) -> torch.Tensor:
    """``x @ W`` for x (..., in) and the packed (in, out) weight; result in x's dtype.

    Twin: :func:`autoround.kernels.reference.quant_matmul`.
    """
    if bits not in KERNEL_BITS:
        raise ValueError(f"the Triton kernel serves bits {KERNEL_BITS}, got {bits}")
    lead, in_features = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, in_features)
    m, n = x2.shape[0], scales.shape[1]
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    block_m, block_n, block_k = block
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _quant_matmul_kernel[grid](
        x2, qweight, qzeros, scales, out,
        m, n, in_features, group_width, zero_offset,
        x2.stride(0), x2.stride(1), qweight.stride(0), qweight.stride(1),
        qzeros.stride(0), qzeros.stride(1), scales.stride(0), scales.stride(1),
        out.stride(0), out.stride(1),
        BITS=bits, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    return out.reshape(*lead, n)
