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

from typing import Protocol

import torch

from autoround.dtypes.base import QParams
from autoround.dtypes.int_search import group_importance


class BlockScaledType(Protocol):
    """What the search needs of NVFP4's data type (:class:`autoround.dtypes.nv_fp.NvFpDataType`,
    which imports this module)."""

    def global_scale_of(self, grouped: torch.Tensor) -> torch.Tensor: ...
    def block_scales_of(
        self, amax: torch.Tensor, max_scale: torch.Tensor | float, gs: torch.Tensor
    ) -> torch.Tensor: ...
    def qparams_of_blocks(self, block: torch.Tensor, gs: torch.Tensor) -> QParams: ...
    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor: ...
    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor: ...
    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, QParams]: ...


#: The factors of each block maximum Intel tries after 1.0, in its order (50/100 ... 151/100).
FACTORS = tuple(n / 100.0 for n in range(50, 152) if n != 100)


def searched_factors(
    dtype: BlockScaledType, grouped: torch.Tensor, group_size: int, imatrix: torch.Tensor | None
) -> torch.Tensor:
    """Each block's searched factor (groups, 1) float32 for the layer's ``imatrix`` (or None)."""
    importance = None
    if imatrix is not None:
        importance = group_importance(imatrix.to(grouped.device), grouped, group_size, 4)
    return best_factors(dtype, grouped, importance)


def best_factors(
    dtype: BlockScaledType, grouped: torch.Tensor, importance: torch.Tensor | None
) -> torch.Tensor:
    """Each block's factor (groups, 1) float32 with the smallest weighted error, searched on the
    float32 weights.

    A candidate's error depends on its factor only through the E4M3 block scale it rounds to,
    and the 102 factors of a block round to at most ~15 consecutive E4M3 codes, so each code is
    quantized once and every factor takes its code's error: the factors and errors of trying all
    102 in turn (Intel's loop), in ~1/7 of the passes over the weight."""
    weight = grouped.float()
    amax = torch.abs(weight).amax(dim=-1, keepdim=True)
    gs = dtype.global_scale_of(weight)
    factors = torch.tensor((1.0, *FACTORS), dtype=torch.float32, device=weight.device).reshape(1, -1)
    # Non-negative E4M3 values order as their bit patterns, so codes are consecutive integers.
    codes = dtype.block_scales_of(amax, factors, gs).to(torch.float8_e4m3fn).view(torch.uint8).long()
    low, high = codes.amin(dim=1, keepdim=True), codes.amax(dim=1, keepdim=True)
    errors = []
    for step in range(int((high - low).max()) + 1):
        level = torch.minimum(low + step, high).to(torch.uint8).view(torch.float8_e4m3fn)
        qp = dtype.qparams_of_blocks(level.to(torch.float32), gs)
        out = dtype.dequantize(dtype.quantize(weight, qp, 4), qp)
        err = (out - weight) * (out - weight)
        errors.append((err * importance if importance is not None else err).sum(dim=-1))
    candidate_errors = torch.stack(errors, dim=1).gather(1, codes - low)
    # argmin keeps the first of equal errors: Intel's strict "better than the best so far".
    first_best = candidate_errors.argmin(dim=1, keepdim=True)
    return factors.expand(weight.shape[0], -1).gather(1, first_best)


def nv_opt_rtn(
    dtype: BlockScaledType,
    grouped: torch.Tensor,
    group_size: int,
    imatrix: torch.Tensor | None,
    search: BlockScaledType | None = None,
) -> tuple[torch.Tensor, QParams]:
    """Optimized RTN of grouped NVFP4 weights: the quantize-dequantize (``grouped``'s dtype) with
    each block's searched factor, and its parameters. ``search`` (default ``dtype``) is the type
    the factors are searched with: Intel searches under the weight's own global scale and
    quantizes with the fused group's (``dtype``)."""
    factors = searched_factors(search or dtype, grouped, group_size, imatrix)
    return dtype.qdq(grouped, 4, True, max_scale=factors)
