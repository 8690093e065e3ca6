"""Where SignRound's clipping factors start.

Intel's SignRound starts every group's ``min_scale`` / ``max_scale`` at 1.0 (the full min-max
range; the default). ``"mse"`` starts them at the factor, from a grid down to 0.5, whose
round-to-nearest quantization of the group has the smallest squared weight error — the clipping
search of GPTQ/AWQ-style RTN, done once per layer before tuning. On SmolLM2 with 20 iterations it
lowers the tuned block losses (by 10-25 % over the first six blocks at W2A16G64 and W4A16 g64)
but not the perplexity (cpu-small: W2A16G64 129.1 vs 130.2, W4A16 g64 24.36 vs 24.34), so it is
an option, not the default; see ``docs/signround.md``. Layers tuned from a searched scale
(``enable_alg_ext``, the default for symmetric integers) start there instead and ignore this.
"""

from __future__ import annotations

import torch

from autoround.dtypes.base import DataType

#: Names accepted by ``SignRoundSettings.init_clipping``.
CLIP_INITS = ("minmax", "mse")
#: The searched factors: 1.0 down to 0.5 in steps of 0.025 (1.0 first, so ties keep the full range).
MSE_GRID = tuple(1.0 - 0.025 * i for i in range(21))


@torch.no_grad()
def initial_clipping(dtype: DataType, grouped: torch.Tensor, bits: int, sym: bool, how: str) -> torch.Tensor:
    """Per-group starting factor (groups,), float32, for ``grouped`` (groups, group_width) weights."""
    if how not in CLIP_INITS:
        raise ValueError(f"init_clipping must be one of {CLIP_INITS}, got {how!r}")
    groups = grouped.shape[0]
    ones = torch.ones(groups, device=grouped.device)
    if how == "minmax":
        return ones
    target = grouped.float()
    no_offset = torch.zeros_like(grouped, dtype=torch.float32)
    best_error = torch.full((groups,), float("inf"), device=grouped.device)
    best = ones.clone()
    for factor in MSE_GRID:
        scales = torch.full_like(ones, factor)
        qdq, _ = dtype.qdq(grouped, bits, sym, no_offset, scales, scales)
        error = (qdq.float() - target).square().sum(dim=-1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best = torch.where(better, scales, best)
    return best
