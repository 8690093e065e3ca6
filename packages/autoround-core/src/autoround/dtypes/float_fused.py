"""The weight-sized half of the MX and NVFP4 tuning steps as autograd Functions with their own
backward (as :mod:`autoround.dtypes.int_fused` is for the integer type).

Through plain autograd the straight-through formulas of :mod:`autoround.dtypes.mx_tuning` and
:func:`autoround.dtypes.nv_fp.nv_tuning_qdq` record some thirty weight-sized nodes, and their
backward runs one kernel per node (zero gradients of ``sign`` and the detached roundings, the
three E2M1 branches, the masks of every clamp). The per-group part (shared exponent, block
scale: 1/32 or 1/16 of the elements) stays with autograd; only the weight-sized part is a
Function, whose

* forward computes the same values in fewer passes, each rewrite exact (its comment says why:
  a straight-through ``(round(y) - y) + y`` that is ``round(y)`` itself, E2M1's three masked
  branches that are one rounding with a step of 0.5, 1 or 2, MXFP4's ``2**floor(log2|s|)`` that
  is 1, 2 or 4), and keeps for the backward what it needs (as autograd keeps its inputs);
* backward applies, in the same order and with the same float operations, the derivatives
  autograd's nodes apply (torch's ``derivatives.yaml``: ``div`` by a tensor gives
  ``-grad * ((a / b) / b)``, ``pow(2, x)`` gives ``grad * (result * log 2)``, ``log2`` gives
  ``grad / (x * log 2)``, ``clamp`` keeps ``min <= x <= max``, ``abs`` multiplies by ``sign``);
  what a node sends to a broadcast per-group input is summed over the group with the ``sum``
  autograd's ``sum_to`` uses. Where autograd adds up several contributions to one tensor there
  are two (exact in either order), or all but one are zero.

So the values and the gradients for ``v`` and the factors are autograd's bit for bit
(``tests/core/dtypes/test_float_fused.py`` checks them against ``mx_tuning_qdq_reference`` and
``nv_tuning_qdq_reference``). ``torch.where`` over a weight-sized mask costs as much as tens of
multiplications on CPU: the rewrites avoid it where an exact arithmetic form exists.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from autoround.dtypes.mx_elements import MxElement, binade_power, half_to_even

#: The constants torch's backward formulas multiply by (``pow``: ``log(base)``; ``log2``: this).
_LN2 = math.log(2.0)
_LOG2_LN2 = 0.6931471805599453
#: Largest E2M1 magnitude (``nv_fp.E2M1_MAX``; that module imports this one).
_E2M1_MAX = 6.0


def _floor_value(x: torch.Tensor) -> torch.Tensor:
    """The value of ``floor_ste(x)``: ``(floor(x) - x) + x`` (not always ``floor(x)``)."""
    return (torch.floor(x) - x) + x


def _inside(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Where ``clamp(x, low, high)`` passes its gradient (torch's ``clamp_backward`` mask)."""
    return (x >= low).logical_and_(x <= high)


def _mx_forward(
    weight: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, element: MxElement
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """The values of ``element(clamp(w / scale + v)) * scale`` (float32; the same operations as
    ``mx_tuning.element_ste``) and what the backward needs of its intermediates."""
    mantissa_unit = 2.0**element.mantissa_bits
    m = element.max_normal
    pre = weight / scale + v
    scaled = pre.clamp(-m, m)
    if element.fixed_point:
        steps = scaled * mantissa_unit
    else:
        magnitude = scaled.abs()
        log_in = magnitude + (scaled == 0).to(scaled.dtype)
        if element.few_binades:
            # floor_ste(log2|s|) clamped at 0 is 0, 1 or 2 (below 0 it is negative, if not
            # always an integer; at or above 0 it is floor(log2|s|) exactly): comparisons
            power = binade_power(magnitude)
            floored_in = log_in >= 1.0
        else:
            floored = _floor_value(torch.log2(log_in))
            power = torch.pow(2.0, floored.clamp(min=element.min_exp))
            floored_in = floored >= element.min_exp
        steps = scaled / power * mantissa_unit
    sign_steps = torch.sign(steps)
    # floor_ste's value (floor(y) - y) + y is floor(y) itself for y >= 0.5 (floor(y) - y is
    # exact: 0 - y, or Sterbenz): floor(|steps| + 0.5) less the even ties is half_to_even's
    out1 = sign_steps * half_to_even(steps.abs()) / mantissa_unit
    out2 = out1 * power if not element.fixed_point else out1
    out3 = out2.clamp(-m, m)
    # clamp's gradient mask min <= x <= max is where the clamp changed nothing (NaN: neither)
    inside_pre = pre == scaled
    # The E2M1 / E2M3 grid values times exact powers of two never pass max_normal, so the
    # output clamp's mask is true wherever the value is not NaN, and a NaN element's gradient
    # is cut by the input clamp's mask anyway (its scaled value is NaN): no mask needed there.
    inside_out = None if element.few_binades else out2 == out3
    if element.fixed_point:
        return out3 * scale, inside_out, (out3, sign_steps, inside_pre)
    return out3 * scale, inside_out, (out3, sign_steps, inside_pre, scaled, log_in, floored_in, power, out1)


def _mx_backward(
    grad: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    inside_out: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    element: MxElement,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd's gradients of ``element(clamp(w / scale + v)) * scale`` for ``v`` (elementwise) and for
    ``scale`` ((groups, 1)), node by node in autograd's order."""
    mantissa_unit = 2.0**element.mantissa_bits
    out3, sign_steps, inside_pre = saved[:3]
    # backward: out3 * scale
    grad_scale_out = (grad * out3).sum(dim=-1, keepdim=True)
    g = grad * scale
    if inside_out is not None:
        g = torch.where(inside_out, g, 0.0)
    if element.fixed_point:
        g = (g / mantissa_unit) * sign_steps * sign_steps
        grad_scaled = g * mantissa_unit
    else:
        scaled, log_in, floored_in, power, out1 = saved[3:]
        grad_power2 = g * out1
        g = g * power
        # rounded / mantissa_unit, sign * (floor_ste(|steps| + 0.5) - tie), abs
        g = ((g / mantissa_unit) * sign_steps * sign_steps).mul_(mantissa_unit)
        grad_scaled = g / power
        grad_power1 = -g * ((scaled / power) / power)
        log2_power = power * _LN2
        grad_exp = (grad_power1 * log2_power).add_(grad_power2 * log2_power)
        grad_exp = torch.where(floored_in, grad_exp, 0.0)
        # abs' sign(scaled) is sign(steps): scaled / power never underflows (power <= 1
        # wherever |scaled| < 1), so the two have the same sign, zero and NaN
        grad_scaled.add_((grad_exp.div_(log_in * _LOG2_LN2)).mul_(sign_steps))
    grad_pre = torch.where(inside_pre, grad_scaled, 0.0)
    grad_scale_div = (-grad_pre * ((weight / scale) / scale)).sum(dim=-1, keepdim=True)
    return grad_pre, grad_scale_out + grad_scale_div


class MxElementsQDQ(torch.autograd.Function):
    """``element(clamp(w / scale + v)) * scale`` with hand-written straight-through gradients
    for ``v`` and the per-group ``scale`` (the power of two of the shared exponent)."""

    @staticmethod
    def forward(ctx: Any, grouped, v, scale, element: MxElement) -> torch.Tensor:
        with torch.no_grad():
            out, inside_out, saved = _mx_forward(grouped.float(), v, scale, element)
        ctx.save_for_backward(grouped, scale, inside_out, *saved)
        ctx.element = element
        return out.to(grouped.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grouped, scale, inside_out, *saved = ctx.saved_tensors
        grad_v, grad_scale = _mx_backward(
            grad.float(), grouped.float(), scale, inside_out, tuple(saved), ctx.element
        )
        return (
            None,
            grad_v if ctx.needs_input_grad[1] else None,
            grad_scale if ctx.needs_input_grad[2] else None,
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
    ``sign(scaled)`` and the grid step (0.5, 1 or 2) of each value, in a third of its passes.

    Intel's form takes all three roundings, ``(round(y) - y) + y`` each, and adds them up
    under 0/1 masks. For ``y >= 0`` rounded half to even, ``round(y) - y`` is exact (Sterbenz,
    or ``0 - y``), so each straight-through value is ``round(y)`` itself; ``2 * |x|`` and
    ``|x| / 2`` (for ``|x| >= 4``) are exact, so each branch is ``round(|x| / step) * step``
    with step 0.5, 1 or 2; the masked sum of finite non-negative values picks the one branch
    (the others add +0), and the clamp to +-6 never bites. Hence the same floats, +0 included.
    """
    sign = torch.sign(scaled)
    magnitude = scaled.abs()
    below2 = magnitude < 2.0
    below4 = magnitude < 4.0
    # 2 - [|x| < 4] - [|x| < 2] / 2: 0.5, 1 or 2, exact (torch.where is slow on CPU)
    step = below4.to(scaled.dtype).neg_().add_(2.0).sub_(below2.to(scaled.dtype), alpha=0.5)
    return torch.round(magnitude / step).mul_(step).mul_(sign), sign, step


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
    grad_pre = torch.where(inside_pre, g, 0.0)
    grad_inverse = (grad_pre * weight).sum(dim=-1, keepdim=True)
    return grad_pre, grad_inverse, grad_recip


class NvElementsQDQ(torch.autograd.Function):
    """``e2m1(clamp(w * inverse + v, -6, 6)) * recip`` with hand-written straight-through
    gradients for ``v``, ``inverse`` (``o``) and ``recip`` (``1 / o``)."""

    @staticmethod
    def forward(ctx: Any, grouped, v, inverse, recip) -> torch.Tensor:
        with torch.no_grad():
            pre = grouped.to(torch.float32) * inverse + v
            values, sign, step = e2m1_values(pre.clamp(-_E2M1_MAX, _E2M1_MAX))
            inside_pre = _inside(pre, -_E2M1_MAX, _E2M1_MAX)
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
