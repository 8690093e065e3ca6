"""Least-squares refinement of a searched symmetric integer scale (our addition to optimized RTN).

The scale search of :mod:`autoround.dtypes.int_search` picks each group's scale from a grid and
rounds the weights to it. For the codes it found, the grid point is not the best scale: the
importance-weighted squared error ``sum_i imp_i * (s * q_i - w_i)**2`` is smallest at
``s = sum(imp * w * q) / sum(imp * q * q)``. Refinement alternates that closed-form scale (stored
as fp16, as the checkpoint keeps it) with re-rounding the weights to it, and keeps each group's
new scale and codes only where the weighted error of what the checkpoint will hold went down, so
a group never ends worse than the search left it (the same idea as llama.cpp's ``make_qx_quants``
refinement).
"""

from __future__ import annotations

import torch

from autoround.dtypes.int_formulas import SCALE_DTYPE, SCALE_THRESHOLD

#: Alternations of closed-form scale and re-rounding; past two the error barely moves.
DEFAULT_REFINE_STEPS = 2


def _moments(
    codes: torch.Tensor, weighted: torch.Tensor, importance: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group ``sum(imp * q**2)`` and ``sum(imp * w * q)`` (groups, 1), summed in float32 and
    returned as float64 (a float64 sum of float32 data casts it all first: ~10x slower on CPUs)."""
    square = codes.square()
    if importance is not None:
        square.mul_(importance)
    return (
        square.sum(dim=-1, keepdim=True).double(),
        (weighted * codes).sum(dim=-1, keepdim=True).double(),
    )


@torch.no_grad()
def refine_sym_scale(
    grouped: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    importance: torch.Tensor | None = None,
    steps: int = DEFAULT_REFINE_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined ``(codes, scale)`` of float32 groups; ``scale`` (groups, 1) comes back fp16-exact.

    ``codes`` are the signed codes in ``[-2**(bits-1), 2**(bits-1) - 1]`` the search chose for
    ``scale``; ``importance`` is None (uniform) or per element like ``grouped``. The returned scale
    holds values an fp16 can store, and no group's weighted error exceeds (up to float rounding
    of the sums) that of ``codes`` times the fp16 rounding of ``scale``. Errors are compared as
    ``s**2 * sum(imp q**2) - 2 s * sum(imp w q) + sum(imp w**2)``, the moments the next
    least-squares fit needs anyway.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    nmax = 2 ** (bits - 1)
    weighted = grouped * importance if importance is not None else grouped
    energy = (weighted * grouped).sum(dim=-1, keepdim=True).double()

    def error(s: torch.Tensor, square: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        s = s.to(torch.float64)
        return s * s * square - 2 * s * cross + energy

    best_scale = scale.to(SCALE_DTYPE).to(grouped.dtype)
    best_codes = codes
    square, cross = _moments(codes, weighted, importance)
    best_error = error(best_scale, square, cross)
    for _ in range(steps):
        fitted = (cross / square.clamp(min=1e-300)).to(SCALE_DTYPE).to(grouped.dtype)
        usable = (square > 0) & (fitted.abs() >= SCALE_THRESHOLD)
        candidate = torch.where(usable, fitted, best_scale)
        candidate_codes = grouped.div(candidate).round_().clamp_(-nmax, nmax - 1)
        new_square, new_cross = _moments(candidate_codes, weighted, importance)
        new_error = error(candidate, new_square, new_cross)
        better = new_error < best_error
        best_scale = torch.where(better, candidate, best_scale)
        best_codes = torch.where(better, candidate_codes, best_codes)
        best_error = torch.where(better, new_error, best_error)
        square = torch.where(better, new_square, square)
        cross = torch.where(better, new_cross, cross)
    return best_codes, best_scale
