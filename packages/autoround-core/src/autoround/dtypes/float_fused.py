"""The weight-sized half of the MX and NVFP4 tuning steps as autograd Functions with their own
backward (as :mod:`autoround.dtypes.int_fused` is for the integer type).

Through plain autograd the straight-through formulas of :mod:`autoround.dtypes.mx_tuning` and
:func:`autoround.dtypes.nv_fp.nv_tuning_qdq` record some thirty weight-sized nodes, and their
backward runs one kernel per node (zero gradients of ``sign`` and the detached roundings, the
three E2M1 branches, the masks of every clamp). The per-group part (shared exponent, block
scale: 1/32 or 1/16 of the elements) stays with autograd; only the weight-sized part is a
Function. Its forward computes the same values in fewer passes, each rewrite exact (its comment
says why: a straight-through ``(round(y) - y) + y`` that is ``round(y)`` itself, E2M1's three
masked branches that are one rounding with a step of 0.5, 1 or 2, ``2**floor(log2|s|)`` read
off the float's exponent bits). The backward:

* MX: the derivative written out (``_mx_forward`` says which), computed in the forward, so the
  backward is one product for ``v`` and one row sum for the scale. The gradients are autograd's
  up to float32 rounding (and Intel's, tests/core/dtypes/test_float_tuning.py), with the same
  signs for ``v`` (all the signed descent reads);
* NVFP4: autograd's nodes applied in the same order with the same float operations, so its
  gradients are autograd's bit for bit.

``tests/core/dtypes/test_float_fused.py`` checks both against ``mx_tuning_qdq_reference`` and
``nv_tuning_qdq_reference``. Masks are float32 ones and zeros (:mod:`autoround.dtypes.float_masks`:
bool tensors and ``torch.where`` cost tens of multiplications each on CPU).
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.dtypes.float_masks import float_mask
from autoround.dtypes.int_fused import row_dot
from autoround.dtypes.mx_elements import E2M1, MxElement, binade_power, half_to_even

#: The magnitude a zero is divided by (giving 0): the smallest normal float32, so that it
#: survives flush-to-zero modes (a nonzero element below it, never met in practice, gets a
#: derivative below 1 instead of 1).
_TINY = 2.0**-126
#: Largest E2M1 magnitude (``nv_fp.E2M1_MAX``; that module imports this one).
_E2M1_MAX = 6.0


def _mx_forward(
    weight: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, element: MxElement, need_grads: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The values of ``element(clamp(w / scale + v)) * scale`` (float32; Intel's ``quant_element``
    values, half to even) and, if ``need_grads``, their derivatives for the backward: ``d out /
    d v`` elementwise and ``d out / d scale`` before its per-group sum.

    The straight-through derivative of an element ``q`` with respect to its input ``y`` is
    ``q / y`` in the normal binades (the rounding and the element's own ``floor(log2|y|)``
    pass the gradient straight through: ``d/dy (round(y / 2**e) * 2**e) = 1 + (q - y) / y``),
    1 among the subnormal steps and for fixed-point elements, 0 at ``y == 0`` and where the
    input clamp bit (autograd's, through Intel's formulas: mx_tuning_qdq_reference)."""
    m = element.max_normal
    scaled = weight / scale
    # in place where a tensor is used up: each fresh weight-sized tensor costs page faults
    magnitude = scaled + v
    sign = magnitude.sign()
    magnitude.abs_()
    inside = float_mask(torch.le, magnitude, m) if need_grads else None
    magnitude.clamp_(max=m)
    # grid steps per unit of value: 2**mantissa_bits / (the binade's power of two)
    unit = binade_power(magnitude, element).reciprocal_().mul_(2.0**element.mantissa_bits)
    # y * unit and back are exact (powers of two), and max_normal lies on the grid: no clamp
    rounded = half_to_even(magnitude * unit).div_(unit)
    if not need_grads or inside is None:
        return sign.mul_(rounded).mul_(scale), None, None
    if element.fixed_point:
        slope = sign.abs()
    else:
        # q / y in the normal binades, y / y = 1 below them, 0 / tiny = 0 at zero
        normal = float_mask(torch.ge, magnitude, 2.0**element.min_exp)
        slope = torch.lerp(magnitude, rounded, normal).div_(magnitude.clamp_(min=_TINY))
    slope.mul_(inside)
    elements = sign.mul_(rounded)
    out = elements * scale
    # d out / d scale = element + scale * slope * d(w / scale)/d scale = element - slope * w / scale
    per_scale = scaled.mul_(slope).neg_().add_(elements)
    return out, slope.mul_(scale), per_scale


class MxElementsQDQ(torch.autograd.Function):
    """``element(clamp(w / scale + v)) * scale`` with straight-through gradients for ``v`` and
    the per-group ``scale`` (the power of two of the shared exponent), written out."""

    @staticmethod
    def forward(ctx: Any, grouped, v, scale, element: MxElement) -> torch.Tensor:
        need_grads = any(ctx.needs_input_grad[1:3])
        with torch.no_grad():
            out, grad_v_factor, per_scale = _mx_forward(grouped.float(), v, scale, element, need_grads)
        ctx.save_for_backward(grad_v_factor, per_scale)
        return out.to(grouped.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grad_v_factor, per_scale = ctx.saved_tensors
        grad = grad.float()
        return (
            None,
            grad * grad_v_factor if ctx.needs_input_grad[1] else None,
            row_dot(grad, per_scale) if ctx.needs_input_grad[2] else None,
            None,
        )


def mx_elements_qdq(
    grouped: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, element: MxElement
) -> torch.Tensor:
    """The weight-sized part of :func:`autoround.dtypes.mx_tuning.mx_tuning_qdq` (``grouped``'s
    dtype); ``scale`` is the float32 (groups, 1) shared scale, with its autograd history."""
    return MxElementsQDQ.apply(grouped, v, scale, element)


def e2m1_values(scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The values of ``nv_fp.e2m1(scaled, straight_through)`` for ``scaled`` in [-6, 6], with
    ``sign(scaled)`` and the grid step (0.5, 1 or 2) of each value, in a third of its passes
    (values only: call it without autograd).

    Intel's form takes all three roundings, ``(round(y) - y) + y`` each, and adds them up
    under 0/1 masks. For ``y >= 0`` rounded half to even, ``round(y) - y`` is exact (Sterbenz,
    or ``0 - y``), so each straight-through value is ``round(y)`` itself; ``2 * |x|`` and
    ``|x| / 2`` (for ``|x| >= 4``) are exact, so each branch is ``round(|x| / step) * step``
    with step 0.5, 1 or 2; the masked sum of finite non-negative values picks the one branch
    (the others add +0), and the clamp to +-6 never bites. Hence the same floats, +0 included.
    """
    sign = torch.sign(scaled)
    magnitude = scaled.abs()
    # half the binade's power of two (1, 2 or 4 for |x| <= 6): 0.5, 1 or 2, exact
    step = binade_power(magnitude, E2M1).mul_(0.5)
    # in place: each fresh activation-sized tensor costs page faults that outweigh its pass
    return magnitude.div_(step).round_().mul_(step).mul_(sign), sign, step


def _nv_backward(
    grad: torch.Tensor,
    weight: torch.Tensor,
    recip: torch.Tensor,
    saved: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Autograd's gradients of ``e2m1(clamp(w * inverse + v, -6, 6)) * recip`` (Intel's
    straight-through E2M1) for ``v``, ``inverse`` and ``recip`` (the last two (groups, 1))."""
    values, sign, step, inside_pre = saved
    grad_recip = (grad * values).sum(dim=-1, keepdim=True)
    # e2m1: clamp(...) * sign, then the three masked branches; the values lie in [0, 6], so the
    # clamp's mask is everywhere true, and only one branch's gradient is not zero (the others
    # add +-0): halves (2|x|, then / 2), ones, twos (|x| / 2, then * 2); then abs.
    g = grad * recip * sign
    # halves: (g / 2) * 2; ones: g; twos: (g * 2) / 2; that is (g * step) * (1 / step), the
    # same roundings (x / 2 and x * 0.5 are one correctly rounded value), without torch.where
    g = (g * step).mul_(step.reciprocal()).mul_(sign)
    grad_pre = g.mul_(inside_pre)
    grad_inverse = (grad_pre * weight).sum(dim=-1, keepdim=True)
    return grad_pre, grad_inverse, grad_recip


class NvElementsQDQ(torch.autograd.Function):
    """``e2m1(clamp(w * inverse + v, -6, 6)) * recip`` with hand-written straight-through
    gradients for ``v``, ``inverse`` (``o``) and ``recip`` (``1 / o``)."""

    @staticmethod
    def forward(ctx: Any, grouped, v, inverse, recip) -> torch.Tensor:
        with torch.no_grad():
            pre = (grouped.to(torch.float32) * inverse).add_(v)
            inside_pre = float_mask(torch.le, pre.abs(), _E2M1_MAX)
            values, sign, step = e2m1_values(pre.clamp_(-_E2M1_MAX, _E2M1_MAX))
            out = (values * recip).to(grouped.dtype)
        ctx.save_for_backward(grouped, recip, values, sign, step, inside_pre)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grouped, recip, *saved = ctx.saved_tensors
        grad_v, grad_inverse, grad_recip = _nv_backward(grad.float(), grouped.float(), recip, tuple(saved))
        needs = ctx.needs_input_grad
        return (
            None,
            grad_v if needs[1] else None,
            grad_inverse if needs[2] else None,
            grad_recip if needs[3] else None,
        )


def nv_elements_qdq(
    grouped: torch.Tensor, v: torch.Tensor, inverse: torch.Tensor, recip: torch.Tensor
) -> torch.Tensor:
    """The weight-sized part of :func:`autoround.dtypes.nv_fp.nv_tuning_qdq` (``grouped``'s
    dtype); ``inverse`` and ``recip`` are the float32 (groups, 1) ``o`` and ``1 / o``."""
    return NvElementsQDQ.apply(grouped, v, inverse, recip)
