"""Optimized RTN for MX floats: Intel 0.16.1's ``quant_mx_opt_rtn`` (``data_type/mxfp.py``),
reproduced bit for bit (``tests/fixtures/intel/fp_qdq.safetensors``).

A shared exponent changes only when the group maximum crosses a power of two, so Intel tries
three maxima per group of 32 (``max|w|`` times 1, 0.5 and 2), each giving the plain
floor-rounded shared exponent, and keeps the one whose quantize-dequantize has the smallest
importance-weighted squared error (``sum((qdq - w)**2 * imp)``; the first of equal losses,
tried in that order). The importance is the layer's imatrix repeated per row, repaired where it
holds zeros as for integers (:func:`autoround.dtypes.int_search.group_importance`), or 1.

Intel resolves this search for ``data_type="mx_fp"`` only as we use it: for its other MX names
(``mx_int``, ``mx_fp6e3m2``, ...) the lookup ``opt_rtn_<name>`` falls back to ``mx_fp<bits>``
elements, a different type, so those types keep plain round-to-nearest here.
"""

from __future__ import annotations

import torch

from autoround.dtypes.int_search import group_importance
from autoround.dtypes.mx_elements import MxElement, round_to_element, shared_exponent

#: The multiples of the group maximum Intel tries, in its order (1 first).
MAX_FACTORS = (1.0, 0.5, 2.0)


def element_qdq(scaled: torch.Tensor, element: MxElement) -> torch.Tensor:
    """``scaled`` (already divided by the shared scale) on the element grid, the sign taken as
    Intel's ``sign(x) * magnitude`` (so -0.0 stays -0.0 where no offset was added)."""
    return torch.sign(scaled) * round_to_element(scaled, element).abs()


def searched_multiplier(
    grouped: torch.Tensor, element: MxElement, importance: torch.Tensor | float
) -> torch.Tensor:
    """Each group's multiplier of its maximum (groups, 1) float32, one of :data:`MAX_FACTORS`,
    whose shared exponent gives the smallest weighted error (Intel's ``search_mx_scale``)."""
    weight = grouped.float()
    best = best_loss = torch.empty(0)
    for factor in MAX_FACTORS:
        scale = torch.exp2(shared_exponent(weight, element, factor))
        err = (element_qdq(weight / scale, element) * scale - weight).pow(2)
        loss = (err * importance if isinstance(importance, torch.Tensor) else err).sum(dim=-1)
        if factor == MAX_FACTORS[0]:  # Intel's baseline: kept unless strictly beaten (NaN, inf too)
            best, best_loss = torch.ones_like(scale), loss
            continue
        better = loss < best_loss
        best = torch.where(better.unsqueeze(-1), factor, best)
        best_loss = torch.where(better, loss, best_loss)
    return best


def searched_exponent(
    grouped: torch.Tensor, element: MxElement, importance: torch.Tensor | float
) -> torch.Tensor:
    """Each group's shared exponent (groups, 1) float32 with the smallest weighted error."""
    return shared_exponent(grouped, element, searched_multiplier(grouped, element, importance))


def importance_of(
    grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
) -> torch.Tensor | float:
    """The search's weights: the imatrix repeated per row and repaired where it holds zeros,
    or 1 without one."""
    weight = grouped.float()
    return 1.0 if imatrix is None else group_importance(imatrix.to(weight.device), weight, group_size, bits)


def mx_opt_rtn(
    grouped: torch.Tensor, bits: int, element: MxElement, group_size: int, imatrix: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimized RTN of grouped weights: the quantize-dequantize (float32) with each group's
    searched shared scale, and that scale (groups, 1) float32."""
    weight = grouped.float()
    importance = importance_of(weight, bits, group_size, imatrix)
    scale = torch.exp2(searched_exponent(weight, element, importance))
    return element_qdq(weight / scale, element) * scale, scale
