"""Optimized RTN for NVFP4: Intel 0.16.1's ``opt_rtn_fast_nvfp4`` (``data_type/nvfp.py``),
reproduced bit for bit (``tests/fixtures/intel/fp_qdq.safetensors``).

Each block of 16 tries its maximum scaled by 0.50, 0.51, ..., 1.51 (1.00 first, then the rest in
that order) before its E4M3 scale is taken, under a global scale from the whole tensor as
plain RTN has it, and keeps the factor whose quantize-dequantize has the smallest
importance-weighted squared error (the first of equal ones); the layer is then quantized with
those factors and the global scale of the weight as given (a fused group's where shared:
:mod:`autoround.dtypes.nv_fp`). The importance is the layer's imatrix
repeated per row, repaired where it holds zeros as for integers
(:func:`autoround.dtypes.int_search.group_importance`), or 1.
"""

from __future__ import annotations

import torch

from autoround.dtypes.base import DataType, QParams
from autoround.dtypes.int_search import group_importance

#: The factors of each block maximum Intel tries after 1.0, in its order (50/100 ... 151/100).
FACTORS = tuple(n / 100.0 for n in range(50, 152) if n != 100)


def searched_factors(
    dtype: DataType, grouped: torch.Tensor, group_size: int, imatrix: torch.Tensor | None
) -> torch.Tensor:
    """Each block's searched factor (groups, 1) float32 for the layer's ``imatrix`` (or None)."""
    importance = None
    if imatrix is not None:
        importance = group_importance(imatrix.to(grouped.device), grouped, group_size, 4)
    return best_factors(dtype, grouped, importance)


def best_factors(dtype: DataType, grouped: torch.Tensor, importance: torch.Tensor | None) -> torch.Tensor:
    """Each block's factor (groups, 1) float32 with the smallest weighted error, searched on the
    float32 weights."""
    weight = grouped.float()

    def loss(factor: torch.Tensor | float) -> torch.Tensor:
        out, _ = dtype.qdq(weight, 4, True, max_scale=factor)
        err = (out - weight) * (out - weight)
        return (err * importance if importance is not None else err).sum(dim=-1)

    best_loss = loss(1.0)
    best = torch.ones(weight.shape[0], 1, device=weight.device)
    for value in FACTORS:
        factor = torch.full((weight.shape[0], 1), value, device=weight.device)
        candidate = loss(factor)
        better = candidate < best_loss
        best_loss = torch.where(better, candidate, best_loss)
        best = torch.where(better.unsqueeze(-1), factor, best)
    return best


def nv_opt_rtn(
    dtype: DataType,
    grouped: torch.Tensor,
    group_size: int,
    imatrix: torch.Tensor | None,
    search: DataType | None = None,
) -> tuple[torch.Tensor, QParams]:
    """Optimized RTN of grouped NVFP4 weights: the quantize-dequantize (``grouped``'s dtype) with
    each block's searched factor, and its parameters. ``search`` (default ``dtype``) is the type
    the factors are searched with: Intel searches under the weight's own global scale and
    quantizes with the fused group's (``dtype``)."""
    factors = searched_factors(search or dtype, grouped, group_size, imatrix)
    return dtype.qdq(grouped, 4, True, max_scale=factors)
