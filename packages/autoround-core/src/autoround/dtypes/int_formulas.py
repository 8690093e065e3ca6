"""The integer formulas: symmetric ("full range") and asymmetric scales, 2 to 8 bits.

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

import torch

SCALE_DTYPE = torch.float16
SCALE_THRESHOLD = 1e-5


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (ties to even), passing gradients straight through."""
    if not x.requires_grad:
        return x.round()
    return (x.round() - x).detach() + x


def clamp_scale_magnitude(scale: torch.Tensor, threshold: float = SCALE_THRESHOLD) -> torch.Tensor:
    """Keep a signed scale at least ``threshold`` in magnitude (0 becomes ``+threshold``)."""
    return torch.where(scale < 0, scale.clamp(max=-threshold), scale.clamp(min=threshold))


def group_min_max(grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's (min, max), widened to include 0."""
    # amin/amax: the same values as min/max without the indices those also compute (2.6x faster)
    return grouped.amin(-1).clamp(max=0), grouped.amax(-1).clamp(min=0)


def sym_scale(
    grouped: torch.Tensor,
    bits: int,
    min_scale: torch.Tensor | float = 1.0,
    max_scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Per-group signed scale of the symmetric full-range variant, shape (groups, 1), fp16."""
    wmin, wmax = group_min_max(grouped)
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
    wmin, wmax = group_min_max(grouped)
    # Intel applies clipping factors in the asymmetric case only when they are tensors (tuned);
    # plain floats are ignored there, so RTN with min_scale=max_scale=1.0 is unaffected either way.
    if isinstance(min_scale, torch.Tensor):
        wmin = wmin * min_scale
    if isinstance(max_scale, torch.Tensor):
        wmax = wmax * max_scale
    scale = ((wmax - wmin) / (2**bits - 1)).to(SCALE_DTYPE).clamp(min=SCALE_THRESHOLD)
    zero = round_ste(-wmin / scale)
    return scale.unsqueeze(-1), zero.unsqueeze(-1)
