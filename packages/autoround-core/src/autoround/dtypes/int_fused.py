"""Symmetric integer quantize-dequantize for tuning, as one autograd step with its own backward.

SignRound runs this on every weight of a block at every iteration. Through plain autograd the
formula of :mod:`autoround.dtypes.int_formulas` costs some twenty passes over the weight (forward and
backward, masks included); written out (:func:`straight_through_grads`), about ten. The
backward recomputes the codes and their clamp mask from the weight, ``v`` and the scale
(:func:`clamped_codes`, the forward's own operations, so the same values) instead of keeping
them from the forward: a block's backward would otherwise start with 8 bytes per weight of every
layer alive (float32 codes and a float32 mask), where recomputing holds them for one layer at a
time. The forward is bit-identical to
:meth:`IntDataType.qdq`; the gradients are those of its straight-through rounding (checked
against autograd in the tests):

* ``d out / d v = scale`` where the code is not clamped, else 0;
* ``d out / d scale = q - w / scale`` where not clamped, else ``q``; summed per group, then
  through ``scale = -max * max_scale / 2**(bits-1)`` (positive side wins) or
  ``scale = -min * min_scale / 2**(bits-1)`` (negative side wins) to the clipping factors.

The per-group range (``wmin`` <= 0 <= ``wmax``) of a fixed weight is computed once by the caller.
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.dtypes.float_masks import float_mask
from autoround.dtypes.int_formulas import SCALE_DTYPE, SCALE_THRESHOLD


def _scale(
    wmin: torch.Tensor, wmax: torch.Tensor, min_scale: torch.Tensor, max_scale: torch.Tensor, levels: int
):
    """Signed fp16 scale per group (as :func:`autoround.dtypes.int_formulas.sym_scale`), which side won,
    and where the threshold clamp did not bite."""
    lo_abs, hi_abs = -(wmin * min_scale), wmax * max_scale
    positive_wins = ~(hi_abs < lo_abs)
    raw = ((2 * (~positive_wins).int() - 1) * torch.max(hi_abs, lo_abs) / levels).to(SCALE_DTYPE)
    scale = torch.where(raw < 0, raw.clamp(max=-SCALE_THRESHOLD), raw.clamp(min=SCALE_THRESHOLD))
    return scale, positive_wins, scale == raw


def clamped_codes(
    grouped: torch.Tensor, v: torch.Tensor, scale32: torch.Tensor, levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes ``clamp(round(w / scale + v), -levels, levels - 1)`` (float32) and where the
    clamp left them alone (float32 ones and zeros: :mod:`autoround.dtypes.float_masks`)."""
    rounded = torch.addcdiv(v, grouped, scale32).round_()
    codes = rounded.clamp(-levels, levels - 1)
    return codes, float_mask(torch.eq, rounded, codes)


def rounded_codes(grouped: torch.Tensor, v: torch.Tensor, scale32: torch.Tensor, levels: int) -> torch.Tensor:
    """The forward of the tuning qdq: ``out = scale * codes`` in ``grouped``'s dtype, with the
    codes of :func:`clamped_codes` (which the backward recomputes)."""
    codes = torch.addcdiv(v, grouped, scale32).round_().clamp_(-levels, levels - 1)
    return (scale32 * codes).to(grouped.dtype)


def straight_through_grads(
    grad: torch.Tensor,
    grouped: torch.Tensor,
    codes: torch.Tensor,
    inside: torch.Tensor,
    scale32: torch.Tensor,
    need_v: bool,
    need_scale: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``out = scale * codes``, ``codes = clamp(round(w / scale + v))``, with
    straight-through rounding: for ``v`` (elementwise) and for the scale (summed per group, (groups, 1)).
    ``inside`` is 1.0 where the clamp left the code alone, else 0.0.

    ``d out / d scale`` is ``codes - w / scale`` where the code is not clamped, else ``codes``; its
    per-group sum is taken as ``<grad, codes> - <grad inside, w> / scale``, two dot products over
    tensors that exist anyway, instead of building the elementwise derivative (four more passes
    over the weight per layer and iteration).
    """
    grad, grouped = grad.float(), grouped.float()  # no-ops when tuning in float32
    inside_grad = grad * inside
    per_group = None
    if need_scale:
        per_group = row_dot(grad, codes) - row_dot(inside_grad, grouped) / scale32
    # in place: inside_grad is ours and used up, and one weight-sized tensor less is alive
    grad_v = inside_grad.mul_(scale32) if need_v else None
    return grad_v, per_group


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product of each row of two (groups, width) tensors, (groups, 1), without an
    elementwise product tensor."""
    return torch.bmm(a.unsqueeze(-2), b.unsqueeze(-1)).squeeze(-1)


class SymmetricQDQ(torch.autograd.Function):
    """``scale * clamp(round(w / scale + v))`` with hand-written gradients for v and the factors."""

    @staticmethod
    def forward(ctx: Any, grouped, wmin, wmax, v, min_scale, max_scale, bits: int) -> torch.Tensor:
        levels = 2 ** (bits - 1)
        scale, positive_wins, unclamped = _scale(wmin, wmax, min_scale, max_scale, levels)
        scale = scale.unsqueeze(-1)
        scale32 = scale.float()  # fp16 -> fp32 is exact; torch's promotion does the same
        out = rounded_codes(grouped, v, scale32, levels)
        ctx.save_for_backward(grouped, v, scale, wmin, wmax, positive_wins, unclamped)
        ctx.levels = levels
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grouped, v, scale, wmin, wmax, positive_wins, unclamped = ctx.saved_tensors
        levels = ctx.levels
        need_scale = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        scale32 = scale.float()
        codes, inside = clamped_codes(grouped, v, scale32, levels)
        grad_v, per_group = straight_through_grads(
            grad, grouped, codes, inside, scale32, ctx.needs_input_grad[3], need_scale
        )
        del codes, inside
        grad_min = grad_max = None
        if need_scale:
            if per_group is None:  # straight_through_grads computes it whenever need_scale
                raise RuntimeError("straight_through_grads returned no scale gradient with need_scale=True")
            per_group = per_group.squeeze(-1) * unclamped
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
