"""The quantize-dequantize formulas of activations: a layer's input ``x`` (any rank, the
features last) seen as (tokens, features), as Intel's ``reshape_pad_tensor_by_group_size`` sees
it; the dynamic kinds compute their scales from ``x`` itself on every forward.

* :func:`qdq_int_per_token` and :func:`qdq_fp8_per_token`: one scale per token (W8A8), Intel's
  ``rtn_int_sym`` and ``fp8_sym`` with ``group_size=-1`` (see :mod:`autoround.dtypes.activations`).
* :func:`qdq_fp8_static` and :func:`qdq_nvfp4_static`: the calibrated kinds, whose range is not
  ``x``'s but one observed on the calibration set (see :mod:`autoround.algorithms.act_calibration`).
* :func:`qdq_groups`: groups of ``group_size`` features per token, quantize-dequantized by a
  weight data type's own :meth:`~autoround.dtypes.base.DataType.qdq` (MX floats and integers,
  FP8 per group). Intel's activation function is the weight one there too: ``quant_mx``,
  ``quant_mx_rceil`` and ``quant_fp8_sym`` reshape the input to (-1, group) (a partial last group
  zero-padded; a row narrower than the group one group) and quantize each row, with
  ``v=0`` and a ``max_scale`` of 1 (``WrapperWALayer`` passes the layer's untuned
  ``act_max_scale``, a float32 1.0); ``scale_dtype`` and ``q_scale_thresh`` are not read there.
"""

from __future__ import annotations

import torch

from autoround.dtypes import DTYPES
from autoround.dtypes.base import with_shared_statistic
from autoround.dtypes.e4m3 import e4m3
from autoround.dtypes.fp8_fused import fp8_tuning_qdq
from autoround.dtypes.grouping import from_groups, to_groups
from autoround.dtypes.ste import Through, forward_only, straight_through

#: Intel's default ``scale_dtype`` (float16) and the smallest scale magnitude it keeps with it.
INT_SCALE_DTYPE = torch.float16
INT_SCALE_FLOOR = 1e-5
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)
#: E2M1's largest element (NVFP4's activation elements).
E2M1_MAX = 6.0
#: The smallest FP8 activation scale (vLLM's ``_FP8_MIN_SCALING_FACTOR``, which Intel copies).
FP8_SCALE_FLOOR = 1.0 / (E4M3_MAX * 512.0)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as (tokens, features): every leading dimension is a token dimension."""
    return x.reshape(-1, x.shape[-1])


def qdq_int_per_token(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's symmetric integer quantize-dequantize of ``x``, one scale per token.

    Returns the quantize-dequantized ``x`` (its shape and dtype) and the scales (tokens, 1),
    float16 (signed: see :mod:`autoround.dtypes.activations`).
    """
    rows = _rows(x)
    maxq = 2 ** (bits - 1)
    low = torch.clamp(rows.amin(-1), max=0)
    high = torch.clamp(rows.amax(-1), min=0)
    low_abs = -low
    # The sign makes the value of largest magnitude land on -maxq (one more code than +maxq - 1).
    signed_max = (2 * (high < low_abs).int() - 1) * torch.max(high, low_abs)
    scale = (signed_max / maxq).to(INT_SCALE_DTYPE)
    scale = torch.where(
        scale < 0, torch.clamp(scale, max=-INT_SCALE_FLOOR), torch.clamp(scale, min=INT_SCALE_FLOOR)
    ).unsqueeze(-1)
    codes = rows.div(scale).round_().clamp_(-maxq, maxq - 1)
    return codes.mul_(scale).to(x.dtype).reshape(x.shape), scale


def qdq_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's FP8 E4M3 quantize-dequantize of ``x``, one float32 scale per token.

    Returns the quantize-dequantized ``x`` (its shape and dtype) and the scales (tokens, 1).
    """
    rows = _rows(x)
    scale = torch.abs(rows).amax(dim=-1).to(torch.float32) / E4M3_MAX
    scale = torch.clip(scale, min=FP8_SCALE_FLOOR).unsqueeze(-1)
    if rows.dtype == torch.float16:  # Intel's detour (it avoids NaN gradients there)
        rows = rows.to(torch.bfloat16)
    elements = torch.clip(rows / scale, -E4M3_MAX, E4M3_MAX)
    elements = e4m3(elements)
    return (elements * scale).to(x.dtype).reshape(x.shape), scale


def qdq_groups(
    x: torch.Tensor, data_type: str, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` quantize-dequantized in groups of ``group_size`` features by the weight data type
    ``data_type`` (a :data:`~autoround.dtypes.DTYPES` name) at ``bits``, symmetric.

    Returns the result (``x``'s shape and dtype) and the scales (groups, 1): float32, powers of
    two for the MX types, ``max|group| / 448`` for ``"fp"``.
    """
    grouped, layout = to_groups(_rows(x), group_size)
    qdq, qparams = DTYPES[data_type].qdq(grouped, bits, True)
    return from_groups(qdq, layout).reshape(x.shape), qparams.scale


def fp8_static_input_scale(absmax: torch.Tensor) -> torch.Tensor:
    """The static FP8 E4M3 activation scale of a layer whose calibrated input range is
    ``absmax`` (Intel's ``quant_fp8_sym`` with ``tensor_max``): ``absmax / 448`` in float32,
    at least :data:`FP8_SCALE_FLOOR`; 0-dim."""
    scale = absmax.reshape(()).to(torch.float32) / E4M3_MAX
    return torch.clip(scale, min=FP8_SCALE_FLOOR)


def nvfp4_input_global_scale(absmax: torch.Tensor) -> torch.Tensor:
    """NVFP4's per-tensor activation global scale for a calibrated input range ``absmax``
    (Intel's ``calculate_gparam``): ``448 * 6 * (1 / absmax)`` in float32 (the E4M3 block scales'
    range times E2M1's largest element; a reciprocal first, as Intel, and 0 for a zero range);
    0-dim."""
    amax = absmax.reshape(()).to(torch.float32).abs()
    reciprocal = torch.where(amax == 0, torch.zeros_like(amax), 1.0 / amax)
    return (E4M3_MAX * E2M1_MAX) * reciprocal


#: Features per E4M3 block scale of NVFP4 activations (Intel's ``act_group_size=16``).
NV_ACT_BLOCK = 16


def qdq_fp8_static(
    x: torch.Tensor,
    absmax: torch.Tensor,
    range_factor: torch.Tensor | float = 1.0,
    through: Through = forward_only,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's static FP8 E4M3 quantize-dequantize of ``x`` with one scale for the whole tensor
    (``quant_fp8_sym`` with ``group_size=0``, ``tensor_max=absmax``, ``max_scale=range_factor``):
    ``scale = max(absmax * range_factor / 448, 1 / (448 * 512))`` in float32 (the
    :func:`fp8_static_input_scale` of the scaled range), ``x̂ = e4m3(clamp(x / scale, -448, 448))
    * scale`` in ``x``'s dtype (a float16 ``x`` goes through bfloat16, as Intel's does).

    ``absmax`` is the calibrated range (0-dim float32); ``range_factor`` SignRound's tuned
    ``act_max_scale`` (a tensor it differentiates, or 1). ``through`` combines the E4M3 cast with
    its input (:func:`~autoround.dtypes.ste.straight_through` in the tuning forward: Intel's
    ``float8_e4m3fn_ste``). Returns ``x̂`` and the 0-dim scale.
    """
    scale = fp8_static_input_scale(absmax.to(x.device) * range_factor)
    rows = x.reshape(1, -1)  # Intel's group_size=0 view, so gradients sum in its order too
    rows = rows.to(torch.bfloat16) if rows.dtype == torch.float16 else rows
    # a (1, 1) scale, not 0-dim, so a 16-bit x is divided in float32, as Intel's is
    divisor = scale.reshape(1, 1)
    if through is straight_through:  # the tuning forward: the same values and gradients, fused
        return fp8_tuning_qdq(rows, None, divisor).to(x.dtype).reshape(x.shape), scale
    elements = torch.clip(rows / divisor, -E4M3_MAX, E4M3_MAX)
    elements = e4m3(elements, through)
    return (elements * divisor).to(x.dtype).reshape(x.shape), scale


def qdq_nvfp4_static(x: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's NVFP4 activation quantize-dequantize with a calibrated global scale
    (``nv_fp4_with_static_gs`` with ``tensor_max=absmax``): the global scale
    :func:`nvfp4_input_global_scale` of ``absmax`` (0-dim float32), then per block of 16 features
    of each token (a partial last block zero-padded) an E4M3 scale relative to it and E2M1
    elements: NVFP4's weight arithmetic (:mod:`autoround.dtypes.nv_fp`) under that global
    scale. Returns ``x̂`` (``x``'s shape and dtype) and the blocks' effective float32 scales."""
    grouped, layout = to_groups(_rows(x), NV_ACT_BLOCK)
    dtype = with_shared_statistic(DTYPES["nv_fp"], absmax.to(x.device))
    qdq, qparams = dtype.qdq(grouped, 4, True)
    return from_groups(qdq, layout).reshape(x.shape), qparams.scale
