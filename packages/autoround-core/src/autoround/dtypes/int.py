"""Integer weights, registered as ``"int"``: symmetric ("full range") and asymmetric, 2 to 8
bits. The formulas (Intel's conventions) are :mod:`autoround.dtypes.int_formulas`; the fused
tuning step is :mod:`autoround.dtypes.int_fused`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes.base import QParams
from autoround.dtypes.int_formulas import asym_scale_zero, group_min_max, round_ste, sym_scale
from autoround.dtypes.int_fused import symmetric_qdq


@dataclass(frozen=True)
class IntDataType:
    """Integer quantization, registered as ``"int"``."""

    name: str = "int"
    allowed_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)

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
        qp = self.qparams(grouped, bits, sym, min_scale, max_scale)
        codes = self.quantize(grouped, qp, bits, v)
        return self.dequantize(codes, qp).to(grouped.dtype), qp
