"""Symmetric integers from a given scale times a tuned factor: SignRound's searched-scale start.

With ``enable_alg_ext`` SignRound starts a symmetric integer layer from the scale optimized RTN
would pick (:meth:`autoround.dtypes.int.IntDataType.searched_scale`) and tunes one factor per
group on it, instead of clipping factors on the min/max range. The stored scale is
``base * factor`` in fp16 (kept at least 1e-5 in magnitude) and the zero point the constant
``2**(bits-1)``, so checkpoints are ordinary symmetric integer checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.dtypes.base import QParams
from autoround.dtypes.int_formulas import SCALE_DTYPE, SCALE_THRESHOLD, clamp_scale_magnitude, round_ste
from autoround.dtypes.int_fused import clamped_codes, rounded_codes, straight_through_grads


def _scale(base_scale: torch.Tensor, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp16 scale ``base_scale * factor`` kept >= 1e-5 in magnitude, and where that clamp did
    not bite (the factor's gradient flows only there)."""
    raw = (base_scale * factor.unsqueeze(-1)).to(SCALE_DTYPE)
    scale = clamp_scale_magnitude(raw, SCALE_THRESHOLD)
    return scale, scale == raw


def scaled_sym_qdq(
    grouped: torch.Tensor, bits: int, base_scale: torch.Tensor, factor: torch.Tensor, v: torch.Tensor | float
) -> tuple[torch.Tensor, QParams]:
    """Quantize-dequantize with scale ``base_scale * factor`` (fp16, kept >= 1e-5 in magnitude).

    ``base_scale`` is (groups, 1), ``factor`` (groups,); codes are
    ``clamp(round(w / scale + v), -2**(bits-1), 2**(bits-1) - 1)`` with a straight-through
    gradient. The result has ``grouped``'s dtype.
    """
    levels = 2 ** (bits - 1)
    scale, _ = _scale(base_scale, factor)
    codes = round_ste(grouped / scale + v).clamp(-levels, levels - 1)
    qdq = (scale * codes).to(grouped.dtype)
    zero = torch.full_like(scale, levels, dtype=torch.float32)
    return qdq, QParams(scale, zero)


class ScaledQDQ(torch.autograd.Function):
    """:func:`scaled_sym_qdq`'s values for tuning, with hand-written gradients for ``v`` and the
    factor (autograd's straight-through ones, the scale's per-group sum kept in float32)."""

    @staticmethod
    def forward(ctx: Any, grouped, base_scale, factor, v, bits: int) -> torch.Tensor:
        levels = 2 ** (bits - 1)
        scale, unclamped = _scale(base_scale, factor)
        scale32 = scale.float()
        out = rounded_codes(grouped, v, scale32, levels)
        # the codes and their clamp mask are recomputed in the backward (see int_fused)
        ctx.save_for_backward(grouped, v, scale32, base_scale, unclamped)
        ctx.levels = levels
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grouped, v, scale32, base_scale, unclamped = ctx.saved_tensors
        codes, inside = clamped_codes(grouped, v, scale32, ctx.levels)
        grad_v, per_group = straight_through_grads(
            grad, grouped, codes, inside, scale32, ctx.needs_input_grad[3], ctx.needs_input_grad[2]
        )
        del codes, inside
        grad_factor = None
        if per_group is not None:
            grad_factor = (per_group * unclamped * base_scale).squeeze(-1)
        return None, None, grad_factor, grad_v, None


def scaled_sym_tuning_qdq(
    grouped: torch.Tensor, bits: int, base_scale: torch.Tensor, factor: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """:func:`scaled_sym_qdq` (values only) for the tuning loop: one autograd step."""
    return ScaledQDQ.apply(grouped, base_scale, factor, v, bits)
