"""Triton GEMM/GEMV over GPTQ-layout packed weights, dequantized in registers.

Three regimes, picked by the number of activation rows ``M`` (see :mod:`autoround.kernels.triton_configs`):

- **decode** (small M): the weight stream is the whole cost, so each program reads a
  ``(BLOCK_K, BLOCK_N)`` tile of codes once, multiplies the activations by the *raw* codes and
  applies the group's affine map afterwards — ``sum_k x_k (c_kn - z_n) s_n = s_n (sum_k x_k c_kn -
  z_n sum_k x_k)`` — so the per-weight work is one shift, one mask and one multiply-add. K is split
  across programs (atomic fp32 adds) until the chip is full.
- **mid** (moderate M): a tiled GEMM that dequantizes each weight tile in registers and feeds the
  matrix units in the activations' dtype.
- **prefill** (large M): the weight is dequantized once into a dense temporary and multiplied by
  the vendor GEMM; the extra pass costs a few per cent of a compute-bound matmul.

Bits 2, 4 and 8 (no code crosses an int32 word); 3-bit straddles words and is left to other
backends. Numerics are checked under ``TRITON_INTERPRET=1`` against :mod:`autoround.kernels.reference`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from autoround.kernels.triton_configs import KernelConfig, choose_config

#: Bits whose codes never straddle an int32 word.
KERNEL_BITS = (2, 4, 8)


@triton.jit
def _codes_tile(qw_ptr, k0, rn, n_ok, K, N,
                BITS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
                UNPACK_RESHAPE: tl.constexpr):  # fmt: skip
    """The integer codes of rows ``k0 .. k0 + BLOCK_K`` and columns ``rn`` (zero where masked)."""
    per_word: tl.constexpr = 32 // BITS
    mask_bits: tl.constexpr = (1 << BITS) - 1
    if UNPACK_RESHAPE:
        # Each word is read once and fanned out into its per_word codes in registers.
        rw = k0 // per_word + tl.arange(0, BLOCK_K // per_word)
        words = tl.load(
            qw_ptr + rw[:, None] * N + rn[None, :],
            mask=(rw < K // per_word)[:, None] & n_ok[None, :], other=0,
        )  # fmt: skip
        shifts = tl.arange(0, per_word) * BITS
        codes = (words[:, None, :] >> shifts[None, :, None]) & mask_bits
        return tl.reshape(codes, (BLOCK_K, BLOCK_N))
    else:
        # Each word is read per_word times; the repeats hit the L1 cache.
        rk = k0 + tl.arange(0, BLOCK_K)
        words = tl.load(
            qw_ptr + (rk // per_word)[:, None] * N + rn[None, :],
            mask=(rk < K)[:, None] & n_ok[None, :], other=0,
        )  # fmt: skip
        return (words >> ((rk % per_word) * BITS)[:, None]) & mask_bits


@triton.jit
def _zeros(qz_ptr, group, rn, mask, zero_offset, N, BITS: tl.constexpr):
    """True integer zero points for ``group`` (a scalar or a column of group indices) and ``rn``."""
    per_word: tl.constexpr = 32 // BITS
    mask_bits: tl.constexpr = (1 << BITS) - 1
    words = tl.load(qz_ptr + group * (N // per_word) + rn // per_word, mask=mask, other=0)
    return ((words >> ((rn % per_word) * BITS)) & mask_bits) + zero_offset


@triton.jit
def _as_float(codes):
    """Non-negative int32 codes (< 2**23) as fp32, exactly, without an int-to-float conversion.

    The conversion instruction runs at a fraction of the FMA rate and was what bounded the decode
    kernels; instead the codes become the mantissa of 2**23 (one OR) and 2**23 is subtracted.
    """
    return (codes | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _sum(x, axis: tl.constexpr):
    # tl.sum is itself a @triton.jit function of triton.language: under an interpreter switched on
    # after triton was imported it cannot be called, while a reduction over our own combiner can.
    return tl.reduce(x, axis, _add)


@triton.jit
def _dot(a, b, PRECISE: tl.constexpr):
    if PRECISE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b.to(a.dtype))  # b arrives as fp32 (exact codes or weights)


@triton.jit
def _quant_matmul_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, out_ptr,
    M, N, K, group_width, zero_offset, k_per_split,
    BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    TILE_IN_GROUP: tl.constexpr, FOLD_AFFINE: tl.constexpr, ATOMIC: tl.constexpr,
    UNPACK_RESHAPE: tl.constexpr, PRECISE: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    k_start = tl.program_id(2) * k_per_split
    k_end = tl.minimum(K, k_start + k_per_split)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)  # tl.zeros is jitted: breaks late interpreting
    for k0 in tl.range(k_start, k_end, BLOCK_K, num_stages=STAGES):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + rm[:, None] * K + rk[None, :],
            mask=m_ok[:, None] & (rk < k_end)[None, :], other=0.0,
        )  # fmt: skip
        codes = _codes_tile(qw_ptr, k0, rn, n_ok, K, N, BITS, BLOCK_K, BLOCK_N, UNPACK_RESHAPE)
        if TILE_IN_GROUP:
            group = k0 // group_width
            zeros = _zeros(qz_ptr, group, rn, n_ok, zero_offset, N, BITS)
            scale = tl.load(s_ptr + group * N + rn, mask=n_ok, other=0.0).to(tl.float32)
            if FOLD_AFFINE:
                xf = x.to(tl.float32)
                if BLOCK_M == 1:
                    part = _sum(tl.trans(xf) * _as_float(codes), 0)[None, :]
                else:
                    part = _dot(x, _as_float(codes), PRECISE)
                x_sum = _sum(xf, 1)
                acc += (part - x_sum[:, None] * zeros.to(tl.float32)[None, :]) * scale[None, :]
            else:
                weight = (_as_float(codes) - zeros.to(tl.float32)[None, :]) * scale[None, :]
                acc += _dot(x, weight, PRECISE)
        else:
            group = (rk // group_width)[:, None]
            kn_ok = (rk < K)[:, None] & n_ok[None, :]
            zeros = _zeros(qz_ptr, group, rn[None, :], kn_ok, zero_offset, N, BITS)
            scale = tl.load(s_ptr + group * N + rn[None, :], mask=kn_ok, other=0.0)
            weight = (_as_float(codes) - _as_float(zeros)) * scale.to(tl.float32)
            acc += _dot(x, weight, PRECISE)
    out = out_ptr + rm[:, None] * N + rn[None, :]
    out_ok = m_ok[:, None] & n_ok[None, :]
    if ATOMIC:
        tl.atomic_add(out, acc, mask=out_ok)
    else:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _gemv_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, out_ptr, N, K, group_width, zero_offset, k_per_split,
    BITS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ATOMIC: tl.constexpr,
    STAGES: tl.constexpr,
):  # fmt: skip
    """One activation row: each thread keeps its columns' partial sums over whole words.

    The words of a tile stay packed; slot ``j`` of every word holds the codes of rows
    ``k0 + r * per_word + j``. Each code is moved (one shift, one mask-and-or) into the top of an
    fp32 mantissa under the exponent of 1.0, which reads as ``f = 1 + c / 2**BITS`` exactly, and
    multiplied by the matching strided slice of ``x`` — three instructions per weight, where an
    int-to-float conversion alone costs more (the kernel was instruction-bound). Then
    ``sum x (c - z) s = s (2**BITS sum x f - (2**BITS + z) sum x)``, whose two terms are of the
    same size (no cancellation to speak of). Partial sums are reduced across word rows once,
    after the K loop.
    """
    per_word: tl.constexpr = 32 // BITS
    mask_bits: tl.constexpr = (1 << BITS) - 1
    top: tl.constexpr = 23 - BITS  # where a code's lowest bit goes in the mantissa
    levels: tl.constexpr = 1 << BITS
    rows: tl.constexpr = BLOCK_K // per_word
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    k_start = tl.program_id(1) * k_per_split
    k_end = tl.minimum(K, k_start + k_per_split)
    acc = tl.full((rows, BLOCK_N), 0.0, tl.float32)
    zero_acc = tl.full((BLOCK_N,), 0.0, tl.float32)
    for k0 in tl.range(k_start, k_end, BLOCK_K, num_stages=STAGES):
        rw = k0 // per_word + tl.arange(0, rows)
        rw_ok = rw < k_end // per_word
        words = tl.load(qw_ptr + rw[:, None] * N + rn[None, :], mask=rw_ok[:, None] & n_ok[None, :], other=0)
        part = tl.full((rows, BLOCK_N), 0.0, tl.float32)
        x_sum = tl.full((rows,), 0.0, tl.float32)
        for j in tl.static_range(per_word):
            x_j = tl.load(x_ptr + rw * per_word + j, mask=rw_ok, other=0.0).to(tl.float32)
            x_sum += x_j
            if top >= j * BITS:  # noqa: SIM108 (a constexpr branch: the other shift would be negative)
                placed = words << (top - j * BITS)
            else:
                placed = words >> (j * BITS - top)
            mantissa = (placed & (mask_bits << top)) | 0x3F800000
            part += x_j[:, None] * mantissa.to(tl.float32, bitcast=True)
        group = k0 // group_width
        scale = tl.load(s_ptr + group * N + rn, mask=n_ok, other=0.0).to(tl.float32)
        zeros = _zeros(qz_ptr, group, rn, n_ok, zero_offset, N, BITS).to(tl.float32)
        acc += part * (scale * levels)[None, :]
        zero_acc += _sum(x_sum, 0) * (zeros + levels) * scale
    result = _sum(acc, 0) - zero_acc
    if ATOMIC:
        tl.atomic_add(out_ptr + rn, result, mask=n_ok)
    else:
        tl.store(out_ptr + rn, result.to(out_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _dequantize_kernel(
    qw_ptr, qz_ptr, s_ptr, w_ptr, N, K, group_width, zero_offset,
    BITS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    k0 = tl.program_id(0) * BLOCK_K
    rk = k0 + tl.arange(0, BLOCK_K)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    kn_ok = (rk < K)[:, None] & n_ok[None, :]
    codes = _codes_tile(qw_ptr, k0, rn, n_ok, K, N, BITS, BLOCK_K, BLOCK_N, False)
    group = (rk // group_width)[:, None]
    zeros = _zeros(qz_ptr, group, rn[None, :], kn_ok, zero_offset, N, BITS)
    scale = tl.load(s_ptr + group * N + rn[None, :], mask=kn_ok, other=0.0)
    weight = (_as_float(codes) - _as_float(zeros)) * scale.to(tl.float32)
    out = w_ptr + rk[:, None] * N + rn[None, :]
    tl.store(out, weight.to(w_ptr.dtype.element_ty), mask=kn_ok)


def dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The dense (in, out) weight in ``dtype``, one pass over the packed tensors.

    Twin: :func:`autoround.kernels.reference.dequantize`.
    """
    _check_bits(bits)
    in_features, out_features = qweight.shape[0] * 32 // bits, scales.shape[1]
    weight = torch.empty((in_features, out_features), device=qweight.device, dtype=dtype)
    block_k, block_n = 32, 128
    grid = (triton.cdiv(in_features, block_k), triton.cdiv(out_features, block_n))
    _dequantize_kernel[grid](
        qweight.contiguous(), qzeros.contiguous(), scales.contiguous(), weight,
        out_features, in_features, group_width, zero_offset,
        BITS=bits, BLOCK_K=block_k, BLOCK_N=block_n,
    )  # fmt: skip
    return weight


def quant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """``x @ W`` for x (..., in) and the packed (in, out) weight; result in x's dtype.

    ``config`` forces a kernel configuration (benchmarks, tests); by default one is chosen per
    shape (timed once per shape on a GPU, see :func:`autoround.kernels.triton_configs.choose_config`).
    Twin: :func:`autoround.kernels.reference.quant_matmul`.
    """
    _check_bits(bits)
    lead, in_features = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, in_features).contiguous()
    qweight, qzeros, scales = qweight.contiguous(), qzeros.contiguous(), scales.contiguous()  # no-ops when so
    m, n = x2.shape[0], scales.shape[1]
    problem = (m, n, in_features, bits, group_width, x.dtype)
    if config is None:
        config = choose_config(problem, lambda c: _run(x2, qweight, qzeros, scales, zero_offset, problem, c))
    return _run(x2, qweight, qzeros, scales, zero_offset, problem, config).reshape(*lead, n)


def _run(
    x2: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    zero_offset: int,
    problem: tuple,
    config: KernelConfig,
) -> torch.Tensor:
    m, n, k, bits, group_width, dtype = problem
    if config.dense:
        return x2 @ dequantize(qweight, qzeros, scales, bits, group_width, zero_offset, dtype)
    split_k = config.split_k
    k_per_split = triton.cdiv(triton.cdiv(k, split_k), config.block_k) * config.block_k
    atomic = triton.cdiv(k, k_per_split) > 1
    if atomic:  # partial sums from several K slices meet in an fp32 buffer
        out = torch.zeros((m, n), device=x2.device, dtype=torch.float32)
    else:
        out = torch.empty((m, n), device=x2.device, dtype=dtype)
    tile_in_group = group_width % config.block_k == 0
    if config.gemv:
        if m != 1 or not tile_in_group:
            raise ValueError(
                f"the GEMV kernel needs one row and block_k dividing the group, got {config} for {problem}"
            )
        grid: tuple[int, ...] = (triton.cdiv(n, config.block_n), triton.cdiv(k, k_per_split))
        _gemv_kernel[grid](
            x2, qweight, qzeros, scales, out, n, k, group_width, zero_offset, k_per_split,
            BITS=bits, BLOCK_N=config.block_n, BLOCK_K=config.block_k, ATOMIC=atomic,
            STAGES=config.num_stages, num_warps=config.num_warps, num_stages=config.num_stages,
        )  # fmt: skip
        return out.to(dtype) if atomic else out
    grid = (triton.cdiv(n, config.block_n), triton.cdiv(m, config.block_m), triton.cdiv(k, k_per_split))
    _quant_matmul_kernel[grid](
        x2, qweight, qzeros, scales, out,
        m, n, k, group_width, zero_offset, k_per_split,
        BITS=bits, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        TILE_IN_GROUP=tile_in_group, FOLD_AFFINE=tile_in_group and config.fold_affine,
        ATOMIC=atomic, UNPACK_RESHAPE=config.unpack_reshape, PRECISE=_precise_dot(dtype),
        STAGES=config.num_stages, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return out.to(dtype) if atomic else out


def _precise_dot(dtype: torch.dtype) -> bool:
    """fp32 activations get an IEEE fp32 product (not TF32); so do bf16 ones under the interpreter,
    whose bf16 ``tl.dot`` multiplies the raw 16-bit patterns instead of the values."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")


def _check_bits(bits: int) -> None:
    if bits not in KERNEL_BITS:
        raise ValueError(f"the Triton kernel serves bits {KERNEL_BITS}, got {bits}")
