"""The quantize-dequantize formulas of dynamic activations: a layer's input ``x`` (any rank, the
features last) seen as (tokens, features), as Intel's ``reshape_pad_tensor_by_group_size`` sees
it, with scales computed from ``x`` itself on every forward.

* :func:`qdq_int_per_token` and :func:`qdq_fp8_per_token`: one scale per token (W8A8), Intel's
  ``rtn_int_sym`` and ``fp8_sym`` with ``group_size=-1`` (see :mod:`autoround.dtypes.activations`).
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
from autoround.dtypes.grouping import from_groups, to_groups

#: Intel's default ``scale_dtype`` (float16) and the smallest scale magnitude it keeps with it.
INT_SCALE_DTYPE = torch.float16
INT_SCALE_FLOOR = 1e-5
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)
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
    low = torch.clamp(rows.min(-1)[0], max=0)
    high = torch.clamp(rows.max(-1)[0], min=0)
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
    scale = torch.max(torch.abs(rows), dim=-1)[0].to(torch.float32) / E4M3_MAX
    scale = torch.clip(scale, min=FP8_SCALE_FLOOR).unsqueeze(-1)
    if rows.dtype == torch.float16:  # Intel's detour (it avoids NaN gradients there)
        rows = rows.to(torch.bfloat16)
    elements = torch.clip(rows / scale, -E4M3_MAX, E4M3_MAX)
    elements = elements.to(torch.float8_e4m3fn).to(elements.dtype)
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
