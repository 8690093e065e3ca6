"""OCP microscaling floats, registered as ``"mx_fp"`` (Intel auto-round's ``data_type`` name):
MXFP4 (E2M1 elements), MXFP6 (E2M3) and MXFP8 (E4M3), picked by ``bits`` as Intel does; the
same with ``rceil`` rounding of the shared exponent as ``"mx_fp_rceil"``, and the single-element
variants Intel names ``"mx_fp6e3m2"`` (E3M2) and ``"mx_fp8e5m2"`` (E5M2). MX integers
(``"mx_int"``) are the same type with integer elements (:mod:`autoround.dtypes.mx_int`).

Each block of 32 weights shares one power-of-two scale (an E8M0 exponent); each weight is a tiny
sign-magnitude float of that scale. Intel 0.16.1's plain round-to-nearest, reproduced bit for
bit (``tests/fixtures/intel/mx_fp_qdq.safetensors`` and ``fp_qdq.safetensors``):

* shared exponent, by the type's :data:`SHARED_EXPONENTS` rule: ``floor`` (Intel's ``quant_mx``)
  takes ``floor(log2(max|w|)) - emax`` (``emax`` the element format's largest exponent; an
  all-zero group ``1 - emax``); ``rceil`` (``quant_mx_rceil``, the OCP / NVIDIA rounding that
  never clips the group maximum) takes ``ceil(log2(max|w| / max_normal))`` (an all-zero group
  1); both clamped to [-127, 127];
* elements ``w / 2**shared + v``, clamped to +-max_normal, rounded to the element grid: the
  element's own exponent is ``floor(log2|y|)`` (at least the smallest normal one, so small values
  fall on the subnormal steps), and the mantissa rounds half to even.

The element formats and exponent rules are :mod:`autoround.dtypes.mx_elements`. Intel's
optimized RTN for ``"mx_fp"`` (trying 0.5x and 2x the shared scale per group) is
:mod:`autoround.dtypes.mx_search`; the other MX types fall back to plain RTN there. SignRound
tunes every MX type as Intel's wrapper does (:mod:`autoround.dtypes.mx_tuning`): the offset
``v`` before the element rounding and the factor ``max_scale`` on each group maximum
(``min_scale`` is unused), kept in [0, 1]; with ``enable_alg_ext`` an ``"mx_fp"`` layer starts
instead from the searched multiplier of its maximum (:meth:`MxFpDataType.searched_scale`) and
tunes a factor in [0, 2] on it, as Intel's SignRoundV2 does. :meth:`MxFpDataType.quantize`
returns the element values on the float grid (E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives),
not bit patterns: :meth:`dequantize` gets no ``bits`` to decode them by, and
``scale * (codes - 0)`` is then the plain affine formula. No format packs these yet
(formats' ``Capabilities`` list ``"int"`` only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes.base import QParams, RtnOnly, compose_qdq
from autoround.dtypes.mx_elements import ELEMENTS, MX_BLOCK, MxElement, round_to_element, shared_exponent
from autoround.dtypes.mx_search import importance_of, mx_opt_rtn, searched_multiplier
from autoround.dtypes.mx_tuning import group_amax, mx_tuning_qdq


@dataclass(frozen=True)
class MxFpDataType(RtnOnly):
    """OCP MX types: round-to-nearest, SignRound tuning and, where :attr:`search` is set, the
    searched shared scale (see the module docstring). ``elements`` pairs each allowed bit width
    with its element format; ``scale_rounding`` names the shared-exponent rule in :data:`SHARED_EXPONENTS`."""

    name: str = "mx_fp"
    elements: tuple[tuple[int, MxElement], ...] = tuple(ELEMENTS.items())
    scale_rounding: str = "floor"
    #: Whether optimized RTN searches the shared scale (:mod:`autoround.dtypes.mx_search`).
    search: bool = False

    @property
    def allowed_bits(self) -> tuple[int, ...]:
        """The bit widths of :attr:`elements`."""
        return tuple(bits for bits, _ in self.elements)

    def element(self, bits: int) -> MxElement:
        """The element format of ``bits``-wide weights."""
        return dict(self.elements)[bits]

    @property
    def tunable(self) -> bool:
        """SignRound tunes the offsets and the factor on each group maximum."""
        return True

    def searches_scale(self, bits: int, sym: bool) -> bool:
        """Where :attr:`search` is set: optimized RTN tries 0.5x and 2x the shared scale."""
        return self.search

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group's symmetric range ``(-max|w|, max|w|)`` (groups, 1) float32."""
        amax = group_amax(grouped)
        return -amax, amax

    def tuning_qdq(
        self,
        grouped: torch.Tensor,
        group_range: tuple[torch.Tensor, torch.Tensor],
        bits: int,
        sym: bool,
        v: torch.Tensor,
        min_scale: torch.Tensor,
        max_scale: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`qdq`'s values with Intel's straight-through gradients for ``v`` and
        ``max_scale`` (``min_scale`` is unused: it gets no gradient)."""
        element = self.element(bits)
        return mx_tuning_qdq(grouped, group_range[1], element, self.scale_rounding, v, max_scale)

    def opt_rtn_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        group_size: int,
        imatrix: torch.Tensor | None,
        exact: bool,
        refine_steps: int,
        out_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, QParams]:
        """Intel's ``quant_mx_opt_rtn`` (:func:`~autoround.dtypes.mx_search.mx_opt_rtn`): always
        its exact numerics; there is no refinement (``exact`` and ``refine_steps`` are unused)."""
        if not self.search:
            return super().opt_rtn_qdq(
                grouped, bits, sym, group_size, imatrix, exact, refine_steps, out_dtype
            )
        qdq, scale = mx_opt_rtn(grouped, bits, self.element(bits), group_size, imatrix)
        return qdq.to(out_dtype), QParams(scale, torch.zeros_like(scale))

    @torch.no_grad()
    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """SignRound's searched start: optimized RTN's multiplier of each group maximum
        (groups, 1) float32 (1, 0.5 or 2; Intel's ``init_scale``), not the shared scale itself,
        which follows from the maximum times this multiplier times the tuned factor."""
        if not self.search:
            return super().searched_scale(grouped, bits, group_size, imatrix)
        importance = importance_of(grouped, bits, group_size, imatrix)
        return searched_multiplier(grouped, self.element(bits), importance)

    def scaled_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize with each group maximum times ``base_scale * factor`` (the
        searched multiplier of :meth:`searched_scale` and the tuned factor), as Intel's
        ``init_scale * max_scale``."""
        coeff = base_scale * factor.reshape(-1, 1).to(base_scale.device)
        return compose_qdq(self, grouped, bits, True, v, 1.0, coeff)

    def scaled_tuning_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`scaled_qdq`'s values with straight-through gradients for ``v`` and ``factor``."""
        coeff = base_scale * factor.reshape(-1, 1)
        element = self.element(bits)
        return mx_tuning_qdq(grouped, group_amax(grouped), element, self.scale_rounding, v, coeff)

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
        scale = torch.exp2(shared_exponent(grouped, self.element(bits), max_scale, self.scale_rounding))
        return QParams(scale, torch.zeros_like(scale))

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Element values on the ``bits``-wide float grid (float32), after adding the offset
        ``v`` to the scaled weights; not integer codes (see the module docstring)."""
        return round_to_element(grouped.float() / qp.scale + v, self.element(bits))

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
