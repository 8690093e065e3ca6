"""SignRound's tuning forward for MX types: Intel 0.16.1's ``quant_mx`` / ``quant_mx_rceil``
(``auto_round/data_type/mxfp.py``) as its wrapper tunes them, with their straight-through
gradients.

Intel adds the rounding offset ``v`` to ``w / 2**shared`` before the element rounding, and its
clipping factor ``max_scale`` multiplies each group maximum before the shared exponent is taken
(``min_scale`` has no meaning for a symmetric range: it gets no gradient). Every rounding is a
straight-through estimator (``(round(x) - x).detach() + x``), so:

* the shared exponent's ``floor`` / ``ceil`` pass the gradient of ``log2(max|w| * max_scale)``
  on to ``max_scale``;
* the element rounding passes it through the element's own exponent ``floor(log2|y|)`` (where
  that is above the smallest normal one) and through the half-to-even mantissa rounding, so the
  derivative of an element with respect to its input ``y`` is ``q / |y|`` in the normal range
  (``q`` the rounded magnitude) and 1 among the subnormal steps and for fixed-point (MX integer)
  elements;
* values clamped to the element's largest magnitude get no gradient.

The values are bit for bit those of :meth:`autoround.dtypes.mx_fp.MxFpDataType.qdq` and of
Intel (``tests/fixtures/intel/float_tuning_qdq.safetensors``). Where a group is all zero
Intel's gradient is NaN (``log2(0)`` under a ``where``); here it is 0.
"""

from __future__ import annotations

import torch

from autoround.dtypes.float_fused import mx_elements_qdq
from autoround.dtypes.mx_elements import SCALE_EXP_LIMIT, MxElement
from autoround.dtypes.ste import ceil_ste, floor_ste, log2_nonzero

#: Stand-in for a zero quotient under ``rceil``'s logarithm: log2 gives -149, clamped to -127
#: exactly as Intel's ``log2(0) = -inf`` is.
_SMALLEST_SUBNORMAL = 2.0**-149


def shared_exponent_ste(amax: torch.Tensor, element: MxElement, rounding: str) -> torch.Tensor:
    """Each group's E8M0 exponent (groups, 1) of the (already scaled) group maximum ``amax``,
    by Intel's ``floor`` or ``rceil`` rule, with straight-through gradients."""
    if rounding == "floor":
        # An all-zero group takes log2 = 1, Intel's stand-in.
        exponent = floor_ste(log2_nonzero(amax, 2.0)) - element.emax
    elif rounding == "rceil":
        quotient = log2_nonzero(amax / element.max_normal, _SMALLEST_SUBNORMAL)
        exponent = torch.where(amax == 0, torch.ones_like(amax), ceil_ste(quotient))
    else:
        raise ValueError(f"unknown MX shared-exponent rounding {rounding!r}")
    return exponent.clamp(-SCALE_EXP_LIMIT, SCALE_EXP_LIMIT)


def element_ste(scaled: torch.Tensor, element: MxElement) -> torch.Tensor:
    """Values already divided by the shared scale and clamped, on the element grid (Intel's
    ``quant_element`` with half-to-even mantissas), with straight-through gradients."""
    mantissa_unit = 2.0**element.mantissa_bits
    private_exp = None
    if element.fixed_point:
        steps = scaled * mantissa_unit
    else:
        # Zero takes log2(1); the element's own binade, floored at the smallest normal one.
        private_exp = floor_ste(torch.log2(scaled.abs() + (scaled == 0).to(scaled.dtype)))
        private_exp = private_exp.clamp(min=element.min_exp)
        # 2**p is taken afresh each time it is used, as Intel does, so that the gradients sum
        # in Intel's order (bit for bit the same).
        steps = scaled / torch.pow(2.0, private_exp) * mantissa_unit
    magnitude = steps.abs()
    # Ties to even: floor(m + 0.5), less one where m is an even integer plus one half.
    even_tie = (torch.remainder(magnitude - 0.5, 2) == 0).to(steps.dtype)
    rounded = torch.sign(steps) * (floor_ste(magnitude + 0.5) - even_tie)
    out = rounded / mantissa_unit
    if private_exp is not None:
        out = out * torch.pow(2.0, private_exp)
    return out.clamp(-element.max_normal, element.max_normal)


def group_amax(grouped: torch.Tensor) -> torch.Tensor:
    """Each group's largest magnitude (groups, 1), float32: fixed while a weight is tuned."""
    return grouped.float().abs().amax(dim=-1, keepdim=True)


def mx_tuning_qdq(
    grouped: torch.Tensor,
    amax: torch.Tensor,
    element: MxElement,
    rounding: str,
    v: torch.Tensor,
    max_coeff: torch.Tensor | float,
) -> torch.Tensor:
    """Quantize-dequantize of grouped weights for the tuning loop (``grouped``'s dtype).

    ``amax`` is :func:`group_amax` of ``grouped``; ``max_coeff`` multiplies each group
    maximum: the clipping factor (groups,) (classic SignRound), or the searched multiplier times
    the tuned factor (searched-scale start).
    """
    if isinstance(max_coeff, torch.Tensor):
        amax = amax * max_coeff.reshape(-1, 1).to(amax.device)
    else:
        amax = amax * max_coeff
    scale = torch.pow(2.0, shared_exponent_ste(amax, element, rounding))
    # The weight-sized part as one Function with its own backward (same values and gradients,
    # far fewer passes over the weight); the per-group exponent above stays with autograd.
    return mx_elements_qdq(grouped, v, scale, element)


def mx_tuning_qdq_reference(
    grouped: torch.Tensor,
    amax: torch.Tensor,
    element: MxElement,
    rounding: str,
    v: torch.Tensor,
    max_coeff: torch.Tensor | float,
) -> torch.Tensor:
    """:func:`mx_tuning_qdq` through plain autograd over every operation: the formulation the
    fused step must match bit for bit (values and gradients; kept for the tests)."""
    weight = grouped.float()
    if isinstance(max_coeff, torch.Tensor):
        amax = amax * max_coeff.reshape(-1, 1).to(amax.device)
    else:
        amax = amax * max_coeff
    scale = torch.pow(2.0, shared_exponent_ste(amax, element, rounding))
    scaled = (weight / scale + v).clamp(-element.max_normal, element.max_normal)
    return (element_ste(scaled, element) * scale).to(grouped.dtype)
