"""Symmetric integer quantize-dequantize for tuning, as one autograd step with its own backward.

SignRound runs this on every weight of a block at every iteration. Through plain autograd the
formula of :mod:`autoround.dtypes.int` costs some twenty passes over the weight (forward and
backward, masks included); written out, it costs about a dozen, and saves one tensor instead of
several. The forward is bit-identical to :meth:`IntDataType.qdq`; the gradients are those of
its straight-through rounding (checked against autograd in the tests):

* ``d out / d v = scale`` where the code is not clamped, else 0;
* ``d out / d scale = q - w / scale`` where not clamped, else ``q``; summed per group, then
  through ``scale = -max * max_scale / 2**(bits-1)`` (positive side wins) or
  ``scale = -min * min_scale / 2**(bits-1)`` (negative side wins) to the clipping factors.

The per-group range (``wmin`` <= 0 <= ``wmax``) of a fixed weight is computed once by the caller.
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.dtypes.int import SCALE_DTYPE, SCALE_THRESHOLD


def _scale(
    wmin: torch.Tensor, wmax: torch.Tensor, min_scale: torch.Tensor, max_scale: torch.Tensor, levels: int
):
    """Signed fp16 scale per group (as :func:`autoround.dtypes.int.sym_scale`), which side won,
    and where the threshold clamp did not bite."""
    lo_abs, hi_abs = -(wmin * min_scale), wmax * max_scale
    positive_wins = ~(hi_abs < lo_abs)
    raw = ((2 * (~positive_wins).int() - 1) * torch.max(hi_abs, lo_abs) / levels).to(SCALE_DTYPE)
    scale = torch.where(raw < 0, raw.clamp(max=-SCALE_THRESHOLD), raw.clamp(min=SCALE_THRESHOLD))
    return scale, positive_wins, scale == raw


class SymmetricQDQ(torch.autograd.Function):
    """``scale * clamp(round(w / scale + v))`` with hand-written gradients for v and the factors."""

    @staticmethod
    def forward(ctx: Any, grouped, wmin, wmax, v, min_scale, max_scale, bits: int) -> torch.Tensor:
        levels = 2 ** (bits - 1)
        scale, positive_wins, unclamped = _scale(wmin, wmax, min_scale, max_scale, levels)
        scale = scale.unsqueeze(-1)
        scale32 = scale.float()  # fp16 -> fp32 is exact; torch's promotion does the same
        rounded = torch.addcdiv(v, grouped, scale32).round_()
        out = (scale32 * rounded.clamp(-levels, levels - 1)).to(grouped.dtype)
        ctx.save_for_backward(grouped, rounded, scale, wmin, wmax, positive_wins, unclamped)
        ctx.levels = levels
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grouped, rounded, scale, wmin, wmax, positive_wins, unclamped = ctx.saved_tensors
        levels = ctx.levels
        scale32 = scale.float()
        inside = (rounded >= -levels) & (rounded <= levels - 1)
        grad_v = torch.where(inside, grad * scale32, 0.0) if ctx.needs_input_grad[3] else None
        grad_min = grad_max = None
        if ctx.needs_input_grad[4] or ctx.needs_input_grad[5]:
            # d out / d scale: q - w / scale inside the range, the clamped code outside it
            d_scale = torch.where(inside, rounded - grouped / scale32, rounded.clamp(-levels, levels - 1))
            per_group = (grad * d_scale).sum(-1) * unclamped
            grad_max = torch.where(positive_wins, per_group * -wmax / levels, 0.0)
            grad_min = torch.where(positive_wins, 0.0, per_group * -wmin / levels)
        return None, None, None, grad_v, grad_min, grad_max, None


def symmetric_qdq(
    grouped: torch.Tensor,
    wmin: torch.Tensor,
    wmax: torch.Tensor,
    v: torch.Tensor,
    min_scale: torch.Tensor,
    max_scale: torch.Tensor,
    bits: int,
) -> torch.Tensor:
    """Quantize-dequantize ``grouped`` (groups, width) for tuning; see the module docstring."""
    return SymmetricQDQ.apply(grouped, wmin, wmax, v, min_scale, max_scale, bits)
