"""OCP microscaling floats, registered as ``"mx_fp"`` (Intel auto-round's ``data_type`` name):
MXFP4 (E2M1 elements), MXFP6 (E2M3) and MXFP8 (E4M3), picked by ``bits`` as Intel does.

Each block of 32 weights shares one power-of-two scale (an E8M0 exponent); each weight is a tiny
sign-magnitude float of that scale. Intel 0.16.1's plain round-to-nearest, reproduced bit for
bit (``tests/fixtures/intel/mx_fp_qdq.safetensors``):

* shared exponent ``floor(log2(max|w|)) - emax`` (``emax`` the element format's largest
  exponent), clamped to [-127, 127]; an all-zero group takes ``1 - emax``;
* elements ``w / 2**shared + v``, clamped to +-max_normal, rounded to the element grid: the
  element's own exponent is ``floor(log2|y|)`` (at least the smallest normal one, so small values
  fall on the subnormal steps), and the mantissa rounds half to even.

Only that is built: Intel's optimized RTN for MX (trying 0.5x and 2x the shared scale per group),
the ``rceil`` exponent rounding and SignRound tuning are not, so the type derives from
:class:`~autoround.dtypes.base.RtnOnly` (optimized RTN falls back to plain RTN; SignRound refuses
it). :meth:`MxFpDataType.quantize` returns the element values on the float grid (E2M1: 0, 0.5,
1, 1.5, 2, 3, 4, 6 and negatives), not bit patterns: :meth:`dequantize` gets no ``bits`` to
decode them by, and ``scale * (codes - 0)`` is then the plain affine formula. No format packs
these yet (formats' ``Capabilities`` list ``"int"`` only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes.base import QParams, RtnOnly, compose_qdq

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


#: Element format by ``bits``: what Intel's ``"mx_fp" + str(bits)`` resolves to.
ELEMENTS: dict[int, MxElement] = {
    4: MxElement(mantissa_bits=1, min_exp=0, emax=2, max_normal=6.0),  # E2M1
    6: MxElement(mantissa_bits=3, min_exp=0, emax=2, max_normal=7.5),  # E2M3
    8: MxElement(mantissa_bits=3, min_exp=-6, emax=8, max_normal=448.0),  # E4M3
}


def shared_exponent(grouped: torch.Tensor, emax: int, max_scale: torch.Tensor | float) -> torch.Tensor:
    """Each group's E8M0 exponent (groups, 1) float32: ``floor(log2(max|w|)) - emax``, so the
    largest magnitude lands in the element format's top binade (or just above, then clamped)."""
    amax = grouped.float().abs().amax(dim=-1, keepdim=True)
    if isinstance(max_scale, torch.Tensor):
        max_scale = max_scale.reshape(-1, 1).to(amax)
    amax = amax * max_scale
    # An all-zero group: log2(2) = 1, Intel's stand-in; its elements are 0 whatever the scale.
    top = torch.floor(torch.log2(torch.where(amax == 0, 2.0, amax)))
    return (top - emax).clamp(-SCALE_EXP_LIMIT, SCALE_EXP_LIMIT)


def half_to_even(magnitude: torch.Tensor) -> torch.Tensor:
    """Round non-negative values to integers, ties to even.

    Computed as ``floor(m + 0.5)`` less one on even ties rather than with ``torch.round``: the
    two differ only where ``m + 0.5`` itself rounds (``m`` just below 0.5), and there Intel's
    result is this one.
    """
    nearest = torch.floor(magnitude + 0.5)
    # m - 0.5 is exact wherever it could be an integer (m >= 0.25, Sterbenz).
    even_tie = torch.remainder(magnitude - 0.5, 2) == 0
    return nearest - even_tie.to(magnitude.dtype)


def round_to_element(scaled: torch.Tensor, element: MxElement) -> torch.Tensor:
    """Values already divided by the shared scale, rounded to the element grid (float32)."""
    clipped = scaled.clamp(-element.max_normal, element.max_normal)
    magnitude = clipped.abs()
    # Each value's own binade, floored at the smallest normal one (the subnormal steps below it
    # have the same spacing); log2(1) stands in for zero.
    exp = torch.floor(torch.log2(torch.where(magnitude == 0, 1.0, magnitude))).clamp(min=element.min_exp)
    step = torch.exp2(exp - element.mantissa_bits)  # spacing of the grid in that binade
    rounded = (half_to_even(magnitude / step) * step).clamp(max=element.max_normal)
    # Negative values keep their sign when they round to zero (-0.0), as Intel's do.
    return torch.where(clipped < 0, -rounded, rounded)


@dataclass(frozen=True)
class MxFpDataType(RtnOnly):
    """OCP MX floats, registered as ``"mx_fp"``: plain round-to-nearest only (no SignRound
    tuning, no scale search; see the module docstring)."""

    name: str = "mx_fp"
    allowed_bits: tuple[int, ...] = tuple(ELEMENTS)

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """MX blocks are 32 weights and its elements carry their own sign (no zero point)."""
        if group_size != MX_BLOCK:
            return (
                f"group_size={group_size} is not allowed for data_type {self.name!r}: MX shares "
                f"one scale per block of {MX_BLOCK} weights (allowed: {MX_BLOCK})"
            )
        if not sym:
            return (
                f"sym={sym} is not allowed for data_type {self.name!r}: MX elements are "
                "sign-magnitude floats without a zero point (allowed: True)"
            )
        return None

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> QParams:
        """The shared power-of-two scale of each group (float32) and a zero point of 0.

        ``max_scale`` shrinks the group maximum before the exponent is taken, as Intel's
        ``max_scale`` does; ``min_scale`` has no meaning for a symmetric range and is ignored.
        """
        scale = torch.exp2(shared_exponent(grouped, ELEMENTS[bits].emax, max_scale))
        return QParams(scale, torch.zeros_like(scale))

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Element values on the ``bits``-wide float grid (float32), after adding the offset
        ``v`` to the scaled weights; not integer codes (see the module docstring)."""
        return round_to_element(grouped.float() / qp.scale + v, ELEMENTS[bits])

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """``scale * (codes - zero)``: exact, the scale being a power of two."""
        return qp.scale * (codes - qp.zero)

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize in float32, returned in ``grouped``'s dtype (as Intel does)."""
        return compose_qdq(self, grouped, bits, sym, v, min_scale, max_scale)
