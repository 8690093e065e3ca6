"""llama.cpp's K-quants: super-blocks of 256 weights, ``q2_k``, ``q3_k``, ``q4_k``, ``q5_k``, ``q6_k``.

A super-block holds sub-blocks of 16 or 32 weights; each sub-block has an integer scale (and, for
the asymmetric types, an integer min) that multiplies the super-block's fp16 ``d`` (``dmin``).
A value is ``(d * sc) * (code - offset) - (dmin * m)``. Every function here takes ``x`` of shape
(sub-blocks, group) float32, consecutive rows forming a super-block, and returns
:class:`~autoround.dtypes.gguf_legacy.BlockCodes` per sub-block: the codes, the floats
``[d, dmin]`` / ``[d]`` (repeated over the super-block's rows) and the integers ``[sc, m]`` /
``[sc]``.

Round-to-nearest is ``quantize_row_q*_K_ref`` of ``ggml-quants.c`` (``llama-quantize`` without an
importance matrix): each sub-block's scale (and min) searched (``make_qkx2_quants``,
``make_q3_quants``, ``make_qx_quants``), the sub-block scales quantized against the largest,
then every weight re-rounded with the stored scales. With an importance matrix it is
``quantize_row_q*_K_impl``: the weighted searches (``make_qkx3_quants``) and the sub-block
scales themselves quantized by a weighted search (``make_qp_quants``).
"""

from __future__ import annotations

import torch

from autoround.dtypes.gguf_legacy import BlockCodes, fp16, importance
from autoround.dtypes.gguf_search import make_q3_quants, make_qkx_quants, make_qp_quants, make_qx_quants

#: Weights per super-block (``QK_K``).
SUPER_BLOCK = 256


def _super(t: torch.Tensor, group: int) -> torch.Tensor:
    """(sub-blocks, k) -> (super-blocks, sub-blocks per super-block, k)."""
    return t.reshape(-1, SUPER_BLOCK // group, t.shape[-1])


def _per_row(values: torch.Tensor, group: int) -> torch.Tensor:
    """(super-blocks, k) -> (sub-blocks, k): each super-block's fields on each of its rows."""
    return values.repeat_interleave(SUPER_BLOCK // group, dim=0)


def requantize(
    x: torch.Tensor, step: torch.Tensor, shift: torch.Tensor, lo: int, hi: int, codes: torch.Tensor
) -> torch.Tensor:
    """Codes ``clamp(round((x + shift) / step), lo, hi) - lo`` with the stored scales (sub-blocks
    whose ``step`` is 0 keep the search's codes, as llama.cpp does)."""
    live = step != 0
    again = torch.round((x + shift[:, None]) / torch.where(live, step, 1.0)[:, None]).clamp(lo, hi) - lo
    return torch.where(live[:, None], again, codes)


def _asym_super(
    x: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, codes: torch.Tensor, nmax: int, smax: int
) -> BlockCodes:
    """The ``_ref`` tail of q2_K / q4_K / q5_K: sub-block scales and mins as integers in [0, smax]
    against the largest of each, ``d = max_scale / smax``; then the weights re-rounded."""
    group = x.shape[1]
    scales, mins = _super(scales[:, None], group)[..., 0], _super(mins[:, None], group)[..., 0]
    max_scale = scales.amax(-1, keepdim=True).clamp(min=0.0)
    max_min = mins.amax(-1, keepdim=True).clamp(min=0.0)
    inv_scale = torch.where(max_scale > 0, smax / torch.where(max_scale > 0, max_scale, 1.0), 0.0)
    inv_min = torch.where(max_min > 0, smax / torch.where(max_min > 0, max_min, 1.0), 0.0)
    sc = torch.round(inv_scale * scales).clamp(0, smax)
    m = torch.round(inv_min * mins).clamp(0, smax)
    return _asym_finish(x, fp16(max_scale / smax), fp16(max_min / smax), sc, m, codes, nmax)


def _asym_finish(
    x: torch.Tensor,
    d: torch.Tensor,
    dmin: torch.Tensor,
    sc: torch.Tensor,
    m: torch.Tensor,
    codes: torch.Tensor,
    nmax: int,
) -> BlockCodes:
    group = x.shape[1]
    floats = _per_row(torch.cat([d, dmin], dim=1), group)
    ints = torch.stack([sc.reshape(-1), m.reshape(-1)], dim=1)
    step = floats[:, 0] * ints[:, 0]
    shift = floats[:, 1] * ints[:, 1]
    return BlockCodes(requantize(x, step, shift, 0, nmax, codes), floats, ints)


def _ref_weights(x: torch.Tensor) -> torch.Tensor:
    """q4_K / q5_K ``_ref``: ``sqrt(mean(x**2)) + |x|`` per sub-block."""
    return torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[1]) + x.abs()


def q2_k_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q2_K_ref``: sub-blocks of 16, 2-bit codes, 4-bit scales and mins."""
    scales, mins, codes = make_qkx_quants(x, x.abs(), 3, -0.5, 0.1, 15, True)
    return _asym_super(x, scales, mins, codes, 3, 15)


def q4_k_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q4_K_ref``: sub-blocks of 32, 4-bit codes, 6-bit scales and mins."""
    scales, mins, codes = make_qkx_quants(x, _ref_weights(x), 15, -1.0, 0.1, 20, False)
    return _asym_super(x, scales, mins, codes, 15, 63)


def q5_k_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q5_K_ref``: sub-blocks of 32, 5-bit codes, 6-bit scales and mins."""
    scales, mins, codes = make_qkx_quants(x, _ref_weights(x), 31, -0.5, 0.1, 15, False)
    return _asym_super(x, scales, mins, codes, 31, 63)


def _sigma2(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * sum(x**2) / 256`` of each row's super-block, (sub-blocks, 1)."""
    group = x.shape[1]
    total = _super(x * x, group).sum(dim=(1, 2))
    return _per_row((factor * total / SUPER_BLOCK)[:, None], group)


def _asym_weighted(x: torch.Tensor, weights: torch.Tensor, nmax: int, smax: int) -> BlockCodes:
    """``quantize_row_q{2,4,5}_K_impl``: weighted searches, sub-block scales by ``make_qp_quants``."""
    group = x.shape[1]
    scales, mins, codes = make_qkx_quants(x, weights, nmax, -0.9, 0.05, 36, False)
    sw = _super(weights.sum(-1, keepdim=True), group)[..., 0]
    d, sc = make_qp_quants(_super(scales[:, None], group)[..., 0], smax, sw)
    dmin, m = make_qp_quants(_super(mins[:, None], group)[..., 0], smax, sw)
    return _asym_finish(x, fp16(d[:, None]), fp16(dmin[:, None]), sc, m, codes, nmax)


def q2_k_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q2_K_impl`` (``sigma2`` is the super-block's mean square)."""
    return _asym_weighted(x, importance(x, imatrix, _sigma2(x, 1.0)), 3, 15)


def q4_k_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q4_K_impl`` (``sigma2`` twice the super-block's mean square)."""
    return _asym_weighted(x, importance(x, imatrix, _sigma2(x, 2.0)), 15, 63)


def q5_k_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q5_K_impl``."""
    return _asym_weighted(x, importance(x, imatrix, _sigma2(x, 2.0)), 31, 63)


def _sym_finish(
    x: torch.Tensor, d: torch.Tensor, sc: torch.Tensor, codes: torch.Tensor, half: int
) -> BlockCodes:
    group = x.shape[1]
    floats = _per_row(d, group)
    ints = sc.reshape(-1, 1)
    step = floats[:, 0] * ints[:, 0]
    again = requantize(x, step, torch.zeros_like(step), -half, half - 1, codes)
    return BlockCodes(again, floats, ints)


def _largest_signed(scales: torch.Tensor) -> torch.Tensor:
    index = scales.abs().argmax(dim=-1, keepdim=True)
    return scales.gather(-1, index)


def q3_k_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q3_K_ref``: sub-blocks of 16, 3-bit codes, signed 6-bit scales."""
    scales, codes = make_q3_quants(x, 4)
    per = _super(scales[:, None], x.shape[1])[..., 0]
    top = _largest_signed(per)
    live = top != 0
    iscale = -32 / torch.where(live, top, 1.0)
    sc = torch.where(live, torch.round(iscale * per).clamp(-32, 31), -32.0)
    d = torch.where(live, fp16(1 / iscale), 0.0)
    return _sym_finish(x, d, sc, codes, 4)


def q6_k_rtn(x: torch.Tensor) -> BlockCodes:
    """``quantize_row_q6_K_ref``: sub-blocks of 16, 6-bit codes, int8 scales."""
    scales, codes = make_qx_quants(x, 32, None)
    return _q6_k_finish(x, scales, codes)


def _q6_k_finish(x: torch.Tensor, scales: torch.Tensor, codes: torch.Tensor) -> BlockCodes:
    per = _super(scales[:, None], x.shape[1])[..., 0]
    top = _largest_signed(per)
    live = top.abs() >= 1e-15
    iscale = -128 / torch.where(live, top, 1.0)
    sc = torch.where(live, torch.round(iscale * per).clamp(max=127), 0.0)
    d = torch.where(live, fp16(1 / iscale), 0.0)
    codes = torch.where(_per_row(live, x.shape[1]), codes, 0.0)
    return _sym_finish(x, d, sc, codes, 32)


def q3_k_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q3_K_impl``: weighted sub-block searches, the scales by ``make_qx_quants``."""
    weights = importance(x, imatrix, _sigma2(x, 2.0))
    scales, codes = make_qx_quants(x, 4, weights)
    sw = _super(weights.sum(-1, keepdim=True), x.shape[1])[..., 0]
    d, sc = make_qx_quants(_super(scales[:, None], x.shape[1])[..., 0], 32, sw)
    return _sym_finish(x, fp16(d[:, None]), sc - 32, codes, 4)


def q6_k_weighted(x: torch.Tensor, imatrix: torch.Tensor, row_ms: torch.Tensor) -> BlockCodes:
    """``quantize_row_q6_K_impl``: the importance itself weighs each sub-block's search."""
    scales, codes = make_qx_quants(x, 32, imatrix)
    return _q6_k_finish(x, scales, codes)
