"""The pieces every MX type is made of: element formats (E2M1 ... E5M2, fixed-point integers),
the rules that round a block's shared E8M0 exponent (``floor``, ``rceil``), and the rounding of
scaled values to an element grid (Intel 0.16.1's ``quant_element``, half to even). The types
themselves are :mod:`autoround.dtypes.mx_fp` and :mod:`autoround.dtypes.mx_int`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from autoround.dtypes.float_masks import float_mask

#: Weights per shared scale in the OCP MX specification (and in every Intel MX preset).
MX_BLOCK = 32
#: The shared scale is E8M0: an exponent in [-127, 127] (255 is NaN, never produced).
SCALE_EXP_LIMIT = 127


@dataclass(frozen=True)
class MxElement:
    """One element format: its mantissa bits, smallest normal and largest exponent, and its
    largest magnitude (E4M3 gives its top mantissa pattern to NaN, so 448 and not 480)."""

    mantissa_bits: int
    min_exp: int
    emax: int
    max_normal: float

    @property
    def fixed_point(self) -> bool:
        """Whether the element has no exponent bits (MX integers: one binade, ``emax`` 0)."""
        return self.emax == 0


#: The exponent field of a float32.
_EXPONENT_BITS = 0x7F800000


def binade_power(magnitude: torch.Tensor, element: MxElement) -> torch.Tensor:
    """``2 ** max(floor(log2 m), min_exp)`` of non-negative float32 magnitudes: the power of two
    of each value's binade, floored at the element's smallest normal one (the subnormal steps
    below it have the same spacing), in a new tensor.

    Read off the float's exponent bits (zero and subnormals give 0, then the clamp): two cheap
    passes where ``log2``, ``floor`` and ``exp2`` cost three slow ones. Where float32 ``log2``
    rounds a magnitude just below a power of two up to it (Intel's ``floor(log2 m)``), the binade
    here is one lower; the element it rounds to is that power of two either way. NaN gives
    +inf (and stays NaN through the rounding)."""
    bits = magnitude.view(torch.int32).bitwise_and(_EXPONENT_BITS)
    return bits.view(torch.float32).clamp_(min=2.0**element.min_exp)


E2M1 = MxElement(mantissa_bits=1, min_exp=0, emax=2, max_normal=6.0)
E2M3 = MxElement(mantissa_bits=3, min_exp=0, emax=2, max_normal=7.5)
E3M2 = MxElement(mantissa_bits=2, min_exp=-2, emax=4, max_normal=28.0)
E4M3 = MxElement(mantissa_bits=3, min_exp=-6, emax=8, max_normal=448.0)
E5M2 = MxElement(mantissa_bits=2, min_exp=-14, emax=15, max_normal=57344.0)

#: Element format by ``bits``: what Intel's ``"mx_fp" + str(bits)`` resolves to.
ELEMENTS: dict[int, MxElement] = {4: E2M1, 6: E2M3, 8: E4M3}


def floor_exponent(amax: torch.Tensor, element: MxElement) -> torch.Tensor:
    """``floor(log2(amax)) - emax``: the largest magnitude lands in the element format's top
    binade (or just above it, then clamped by the elements)."""
    # An all-zero group: log2(2) = 1, Intel's stand-in; its elements are 0 whatever the scale.
    return torch.floor(torch.log2(torch.where(amax == 0, 2.0, amax))) - element.emax


def rceil_exponent(amax: torch.Tensor, element: MxElement) -> torch.Tensor:
    """``ceil(log2(amax / max_normal))``: the smallest power of two that leaves the largest
    magnitude unclipped (an all-zero group takes 1, as Intel's ``quant_mx_rceil``)."""
    return torch.where(amax == 0, 1.0, torch.ceil(torch.log2(amax / element.max_normal)))


#: How a block's E8M0 exponent is rounded, by the name a type's ``scale_rounding`` gives.
SHARED_EXPONENTS: dict[str, Callable[[torch.Tensor, MxElement], torch.Tensor]] = {
    "floor": floor_exponent,
    "rceil": rceil_exponent,
}


def shared_exponent(
    grouped: torch.Tensor,
    element: MxElement,
    max_scale: torch.Tensor | float,
    rounding: str = "floor",
) -> torch.Tensor:
    """Each group's E8M0 exponent (groups, 1) float32 by the ``rounding`` rule of
    :data:`SHARED_EXPONENTS`, of the group maximum shrunk by ``max_scale``, clamped to +-127."""
    amax = grouped.float().abs().amax(dim=-1, keepdim=True)
    if isinstance(max_scale, torch.Tensor):
        max_scale = max_scale.reshape(-1, 1).to(amax)
    amax = amax * max_scale
    return SHARED_EXPONENTS[rounding](amax, element).clamp(-SCALE_EXP_LIMIT, SCALE_EXP_LIMIT)


#: The one magnitude at which ``floor(m + 0.5)`` and rounding half to even part: ``m + 0.5``
#: rounds up to 1 in float32 (see :func:`half_to_even`).
JUST_BELOW_HALF = 0.5 - 2.0**-25


def half_to_even(magnitude: torch.Tensor) -> torch.Tensor:
    """Round non-negative values below ``2**22`` to integers, ties to even, as Intel does:
    ``floor(m + 0.5)``, less one on even ties.

    That is ``torch.round`` (ties to even) except where ``m + 0.5`` itself rounds onto an
    integer: from 0.5 up ``m + 0.5`` is exact, and below it rounds to 1 only at
    :data:`JUST_BELOW_HALF`, where Intel's value is 1 (``torch.round`` gives 0). Computed so,
    in two cheap passes (``torch.remainder`` alone costs several); checked on every float32 in
    [0.2, 0.6) and around every half integer below 128 (tests/core/dtypes/test_mx_fp.py).
    """
    return torch.round(magnitude).add_(float_mask(torch.eq, magnitude, JUST_BELOW_HALF))


def round_to_element(scaled: torch.Tensor, element: MxElement) -> torch.Tensor:
    """Values already divided by the shared scale (float32), rounded to the element grid."""
    clipped = scaled.clamp(-element.max_normal, element.max_normal)
    magnitude = clipped.abs()
    # grid steps per unit of value in each value's binade (one binade for fixed-point elements)
    unit = binade_power(magnitude, element).reciprocal_().mul_(2.0**element.mantissa_bits)
    # max_normal lies on the grid, so the rounding never passes it
    rounded = half_to_even(magnitude.mul_(unit)).div_(unit)
    # Negative values keep their sign when they round to zero (-0.0), as Intel's do; -0.0 and
    # NaN have sign 0 (+0.0 and NaN, as Intel's).
    return rounded.mul_(torch.sign(clipped))
