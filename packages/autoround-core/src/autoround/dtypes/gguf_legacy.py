"""llama.cpp's 32-weight block types: ``q4_0``, ``q4_1``, ``q5_0``, ``q5_1``, ``q8_0``.

Each quantizer takes ``x`` (blocks, 32) float32 and returns :class:`BlockCodes`: the stored codes
(unsigned, as the block's bits hold them), the float fields of each block (``d``, and ``m`` for
the ``_1`` types, as fp16 values in float32) and its integer fields (the code offset a
symmetric type subtracts). A value is ``d * (code - offset) + m``.

Round-to-nearest is ``quantize_row_*_ref`` of ``ggml-quants.c`` (what ``llama-quantize`` does
without an importance matrix; the ``gguf`` package's numpy ``quantize`` computes the same and is
the test reference): the scale from the block's extreme value, the codes truncated from
``x / d + offset + 0.5`` with the fp32 ``d`` before it is stored as fp16. With importance
weights it is ``quantize_row_*_impl``: llama.cpp's weighted scale search, each weight's
importance ``imatrix * sqrt(sigma2 + x**2)`` (``sigma2`` the row's mean square).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from autoround.dtypes.gguf_search import make_qkx_quants, make_qx_quants


class BlockCodes(NamedTuple):
    """One quantizer's result: codes (blocks, group) and the per-group float and integer fields."""

    codes: torch.Tensor
    floats: torch.Tensor
    ints: torch.Tensor


def fp16(x: torch.Tensor) -> torch.Tensor:
    """The value llama.cpp stores for a float field (``GGML_FP32_TO_FP16``), back in float32."""
    return x.to(torch.float16).to(torch.float32)


def _column(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((like.shape[0], 1), value, dtype=torch.float32, device=like.device)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d != 0, 1 / torch.where(d != 0, d, 1.0), 0.0)


def _symmetric_ref(x: torch.Tensor, half: int) -> BlockCodes:
    """``q4_0`` / ``q5_0``: ``d = max / -half`` (max the signed value of largest magnitude)."""
    index = x.abs().argmax(dim=-1, keepdim=True)
    d = x.gather(-1, index) / -half
    codes = torch.trunc(x * _inverse(d) + (half + 0.5)).clamp(max=2 * half - 1)
    return BlockCodes(codes, fp16(d), _column(half, x))


def _asymmetric_ref(x: torch.Tensor, nmax: int) -> BlockCodes:
    """``q4_1`` / ``q5_1``: ``d = (max - min) / nmax``, ``m = min``."""
    vmin = x.amin(-1, keepdim=True)
    vmax = x.amax(-1, keepdim=True)
    d = (vmax - vmin) / nmax
    codes = torch.trunc((x - vmin) * _inverse(d) + 0.5).clamp(max=nmax)
    return BlockCodes(codes, torch.cat([fp16(d), fp16(vmin)], dim=1), _column(0, x))


def q4_0_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q4_0_ref``."""
    return _symmetric_ref(x, 8)


def q5_0_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q5_0_ref``."""
    return _symmetric_ref(x, 16)


def q4_1_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q4_1_ref``."""
    return _asymmetric_ref(x, 15)


def q5_1_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q5_1_ref``."""
    return _asymmetric_ref(x, 31)


def q8_0_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q8_0_ref``: ``d = amax / 127``, codes ``roundf(x / d)`` (half away from
    zero), stored as int8; here offset by 128 to be unsigned."""
    d = x.abs().amax(-1, keepdim=True) / 127
    scaled = x * _inverse(d)
    codes = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    return BlockCodes(codes + 128, fp16(d), _column(128, x))


def importance(x: torch.Tensor, imatrix: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """llama.cpp's per-weight weights from an importance matrix: ``qw * sqrt(sigma2 + x**2)``."""
    return imatrix * torch.sqrt(sigma2 + x * x)


def _symmetric_weighted(x: torch.Tensor, weights: torch.Tensor, half: int) -> BlockCodes:
    d, codes = make_qx_quants(x, half, weights)
    return BlockCodes(codes, fp16(d[:, None]), _column(half, x))


def _asymmetric_weighted(x: torch.Tensor, weights: torch.Tensor, nmax: int) -> BlockCodes:
    d, the_min, codes = make_qkx_quants(x, weights, nmax, -0.9, 0.05, 36, False)
    floats = torch.cat([fp16(d[:, None]), fp16(-the_min[:, None])], dim=1)
    return BlockCodes(codes, floats, _column(0, x))


def q4_0_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q4_0_impl`` (``row_ms``: each block's row mean square, (blocks, 1))."""
    return _symmetric_weighted(x, importance(x, imatrix, row_ms), 8)


def q5_0_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q5_0_impl``."""
    return _symmetric_weighted(x, importance(x, imatrix, row_ms), 16)


def q4_1_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q4_1_impl``."""
    return _asymmetric_weighted(x, importance(x, imatrix, row_ms), 15)


def q5_1_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q5_1_impl``."""
    return _asymmetric_weighted(x, importance(x, imatrix, row_ms), 31)


def q8_0_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``q8_0`` ignores importance (as llama.cpp does)."""
    return q8_0_rtn(x)
