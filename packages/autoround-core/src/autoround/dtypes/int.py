"""Integer weights, registered as ``"int"``: symmetric ("full range") and asymmetric, 2 to 8
bits. The formulas (Intel's conventions) are :mod:`autoround.dtypes.int_formulas`; the fused
tuning step is :mod:`autoround.dtypes.int_fused`; optimized RTN's scale search and its
least-squares refinement are :mod:`autoround.dtypes.int_search` and
:mod:`autoround.dtypes.int_refine` (symmetric only: Intel 0.16.1 has no asymmetric search); the
qdq from a searched scale times a tuned factor is :mod:`autoround.dtypes.int_scaled`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes.base import DataType, QParams, compose_qdq
from autoround.dtypes.int_formulas import (
    SCALE_DTYPE,
    SCALE_THRESHOLD,
    asym_scale_zero,
    clamp_scale_magnitude,
    group_min_max,
    round_ste,
    sym_scale,
)
from autoround.dtypes.int_fused import symmetric_qdq
from autoround.dtypes.int_refine import DEFAULT_REFINE_STEPS, refine_sym_scale
from autoround.dtypes.int_scaled import scaled_sym_qdq, scaled_sym_tuning_qdq
from autoround.dtypes.int_search import group_importance, opt_rtn_sym_codes


def sym_search_codes(
    grouped: torch.Tensor,
    bits: int,
    group_size: int,
    imatrix: torch.Tensor | None,
    exact: bool = False,
    refine_steps: int = DEFAULT_REFINE_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed codes and scale (groups, 1) of symmetric integer groups: the search, then the
    least-squares refinement.

    ``grouped`` comes from :func:`autoround.dtypes.to_groups`; ``imatrix`` is the layer's
    per-input-channel importance or None. Search and codes are in ``grouped``'s dtype;
    refinement (float32) returns an fp16-exact scale. The defaults are optimized RTN's
    (``OptRtnSettings()``).
    """
    importance = None
    if imatrix is not None:
        importance = group_importance(imatrix.to(grouped.device), grouped, group_size, bits)
    codes, scale = opt_rtn_sym_codes(grouped, bits, importance, threshold=SCALE_THRESHOLD, exact=exact)
    if refine_steps:
        codes, scale = refine_sym_scale(
            grouped.float(), codes.float(), scale.float(), bits, importance, refine_steps
        )
    return codes, scale


@dataclass(frozen=True)
class IntDataType:
    """Integer quantization, registered as ``"int"``."""

    name: str = "int"
    allowed_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)

    @property
    def tunable(self) -> bool:
        """SignRound tunes integers (rounding offsets and clipping factors)."""
        return True

    def for_tiles(self) -> DataType | None:
        """Row groups only (no 2-D weight tiles)."""
        return None

    def searches_scale(self, bits: int, sym: bool) -> bool:
        """Symmetric integers only, at every bit width."""
        return sym

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """Any group size, symmetric or not."""
        return None

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> QParams:
        """Scale and zero point of every group (see the module docstring for the formulas)."""
        if sym:
            scale = sym_scale(grouped, bits, min_scale, max_scale)
            zero = torch.full_like(scale, 2 ** (bits - 1), dtype=torch.float32)
            return QParams(scale, zero)
        scale, zero = asym_scale_zero(grouped, bits, min_scale, max_scale)
        return QParams(scale, zero)

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Unsigned codes in [0, 2**bits - 1] as floats (straight-through rounding)."""
        return (round_ste(grouped / qp.scale + v) + qp.zero).clamp(0, 2**bits - 1)

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """``scale * (codes - zero)``."""
        return qp.scale * (codes - qp.zero)

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group's (min, max), widened to include 0: fixed while a weight is tuned."""
        return group_min_max(grouped)

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
        """:meth:`qdq` for the tuning loop: the same values, cheaper gradients (symmetric case
        fused with a hand-written backward; asymmetric through autograd)."""
        if sym:
            return symmetric_qdq(grouped, *group_range, v, min_scale, max_scale, bits)
        return self.qdq(grouped, bits, sym, v, min_scale, max_scale)[0]

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize in one call; the result has ``grouped``'s dtype."""
        return compose_qdq(self, grouped, bits, sym, v, min_scale, max_scale)

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
        """``codes * fp16 scale`` with the searched scale (:func:`sym_search_codes`), so the
        result is exactly what a checkpoint of it dequantizes to; zero is ``2**(bits-1)``."""
        if not self.searches_scale(bits, sym):
            raise ValueError("optimized RTN searches symmetric integer scales only")
        codes, scale = sym_search_codes(grouped, bits, group_size, imatrix, exact, refine_steps)
        scale16 = scale.to(SCALE_DTYPE)
        zero = torch.full_like(scale16, 2 ** (bits - 1), dtype=torch.float32)
        return (codes * scale16).to(out_dtype), QParams(scale16, zero)

    @torch.no_grad()
    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """Optimized RTN's scale for float32 ``grouped`` (its default settings: the float32
        ranking's pick, then the least-squares refinement), as float32 >= 1e-5 in magnitude."""
        _, scale = sym_search_codes(grouped.float(), bits, group_size, imatrix)
        return clamp_scale_magnitude(scale.float(), SCALE_THRESHOLD)

    def scaled_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """Symmetric qdq with the fp16 scale ``base_scale * factor`` (:mod:`~autoround.dtypes.int_scaled`)."""
        return scaled_sym_qdq(grouped, bits, base_scale, factor, v)

    def scaled_tuning_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`scaled_qdq`'s values as one autograd step with hand-written gradients."""
        return scaled_sym_tuning_qdq(grouped, bits, base_scale, factor, v)
