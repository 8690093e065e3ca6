"""Integer weights: symmetric ("full range") and asymmetric, 2 to 8 bits.

The conventions are Intel auto-round's, so that checkpoints are interchangeable:

* symmetric: ``scale = m / 2**(bits-1)`` where ``m`` is the group's value of largest magnitude
  *with its sign flipped* when the positive side wins (``-max``), else ``+|min|``; codes
  ``q = clamp(round(w / scale + v), -2**(bits-1), 2**(bits-1) - 1)``. The sign trick maps the
  largest-magnitude value onto ``-2**(bits-1)``, so all 2**bits levels are used ("full range").
  Scales can therefore be negative. Stored codes are ``q + 2**(bits-1)`` and the zero point is
  the constant ``2**(bits-1)``.
* asymmetric: ``scale = (max - min) / (2**bits - 1)``, ``zero = round(-min / scale)``, codes
  ``clamp(round(w / scale + v) + zero, 0, 2**bits - 1)``.
* min/max are taken after clamping to include 0 (``min <= 0 <= max``), times the clipping factors
  ``min_scale`` / ``max_scale`` that SignRound tunes (1.0 for RTN).
* the scale is computed in the weight's dtype, then cast to fp16 and kept at least ``1e-5`` in
  magnitude; ``w / scale`` follows torch's type promotion (fp32 for bf16/fp16 weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes.base import QParams

SCALE_DTYPE = torch.float16
SCALE_THRESHOLD = 1e-5


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (ties to even), passing gradients straight through."""
    if not x.requires_grad:
        return x.round()
    return (x.round() - x).detach() + x


def _group_min_max(grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return grouped.min(-1)[0].clamp(max=0), grouped.max(-1)[0].clamp(min=0)


def sym_scale(
    grouped: torch.Tensor,
    bits: int,
    min_scale: torch.Tensor | float = 1.0,
    max_scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Per-group signed scale of the symmetric full-range variant, shape (groups, 1), fp16."""
    wmin, wmax = _group_min_max(grouped)
    wmin_abs = -(wmin * min_scale)
    wmax_abs = wmax * max_scale
    sign = 2 * (wmax_abs < wmin_abs).int() - 1
    scale = (sign * torch.max(wmax_abs, wmin_abs) / 2 ** (bits - 1)).to(SCALE_DTYPE)
    scale = torch.where(scale < 0, scale.clamp(max=-SCALE_THRESHOLD), scale.clamp(min=SCALE_THRESHOLD))
    return scale.unsqueeze(-1)


def asym_scale_zero(
    grouped: torch.Tensor,
    bits: int,
    min_scale: torch.Tensor | float = 1.0,
    max_scale: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group scale (fp16, > 0) and integer zero point (float) of the asymmetric variant."""
    wmin, wmax = _group_min_max(grouped)
    # Intel applies clipping factors in the asymmetric case only when they are tensors (tuned);
    # plain floats are ignored there, so RTN with min_scale=max_scale=1.0 is unaffected either way.
    if isinstance(min_scale, torch.Tensor):
        wmin = wmin * min_scale
    if isinstance(max_scale, torch.Tensor):
        wmax = wmax * max_scale
    scale = ((wmax - wmin) / (2**bits - 1)).to(SCALE_DTYPE).clamp(min=SCALE_THRESHOLD)
    zero = round_ste(-wmin / scale)
    return scale.unsqueeze(-1), zero.unsqueeze(-1)


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
        return _group_min_max(grouped)

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
            from autoround.dtypes.int_fused import symmetric_qdq

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
