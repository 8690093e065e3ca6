"""SignRound from a searched scale: Intel's "algorithm extension" (``enable_alg_ext``) for
symmetric integers.

Plain SignRound derives each group's scale from its min/max and tunes two clipping factors that
can only shrink that range. With ``enable_alg_ext`` a symmetric integer layer instead starts from
the scale optimized RTN would pick (the importance-weighted search of
:mod:`autoround.dtypes.int_search`, the importance being the squared inputs the block's
full-precision forward feeds the layer; here followed by the least-squares refinement of
:mod:`autoround.dtypes.int_refine`, which Intel does not do) and tunes one factor on it, kept in
[0, 2], so tuning can widen the range as well as shrink it. Below 4 bits the block loss also
leaves out the 0.1 % of output elements with the largest error (a few outlier activations
otherwise dominate the signed gradients). Checkpoints are ordinary symmetric integer
checkpoints: the stored scale is ``base * factor`` in fp16 and the zero point the constant
``2**(bits-1)``.

It is autoround's default (Intel's is off): on SmolLM2 (cpu-small, 20 iterations) it turns
W2A16G64 perplexity from 1.4 % worse than Intel's classic SignRound into 26 % better, and gains
0.3-0.8 at W4A16; ``docs/signround.md`` has the run.
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.algorithms.opt_rtn import sym_codes
from autoround.dtypes.base import QParams
from autoround.dtypes.int_formulas import SCALE_DTYPE, SCALE_THRESHOLD, round_ste
from autoround.dtypes.int_fused import rounded_codes, straight_through_grads
from autoround.dtypes.int_search import clamp_scale_magnitude

#: Range the factor on a searched scale is kept in (Intel's bound for this path).
FACTOR_BOUNDS = (0.0, 2.0)
#: The factor's default learning rate as a share of the rounding lr. Intel's is 1: a factor
#: that starts at the searched scale is already near its best, and full steps (5 % of the scale
#: per step at 20 iterations) overshoot it; docs/signround.md has the runs.
FACTOR_LR_SHARE = 0.25
#: Share of a batch's output elements, largest error first, left out of the low-bit loss.
OUTLIER_FRACTION = 1e-3


def applies_to(data_type: str, sym: bool) -> bool:
    """Whether a layer of this data type and symmetry is tuned from a searched scale."""
    return data_type == "int" and sym


@torch.no_grad()
def searched_scale(
    grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
) -> torch.Tensor:
    """Each group's starting scale (groups, 1), float32: optimized RTN's pick for ``grouped``
    (its default settings: the search, then the least-squares refinement)."""
    _, scale = sym_codes(grouped.float(), bits, group_size, imatrix)
    return clamp_scale_magnitude(scale.float(), SCALE_THRESHOLD)


def _scale(base_scale: torch.Tensor, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp16 scale ``base_scale * factor`` kept >= 1e-5 in magnitude, and where that clamp did
    not bite (the factor's gradient flows only there)."""
    raw = (base_scale * factor.unsqueeze(-1)).to(SCALE_DTYPE)
    scale = clamp_scale_magnitude(raw, SCALE_THRESHOLD)
    return scale, scale == raw


def scaled_sym_qdq(
    grouped: torch.Tensor, bits: int, base_scale: torch.Tensor, factor: torch.Tensor, v: torch.Tensor | float
) -> tuple[torch.Tensor, QParams]:
    """Quantize-dequantize with scale ``base_scale * factor`` (fp16, kept >= 1e-5 in magnitude).

    ``base_scale`` is (groups, 1), ``factor`` (groups,); codes are
    ``clamp(round(w / scale + v), -2**(bits-1), 2**(bits-1) - 1)`` with a straight-through
    gradient. The result has ``grouped``'s dtype.
    """
    levels = 2 ** (bits - 1)
    scale, _ = _scale(base_scale, factor)
    codes = round_ste(grouped / scale + v).clamp(-levels, levels - 1)
    qdq = (scale * codes).to(grouped.dtype)
    zero = torch.full_like(scale, levels, dtype=torch.float32)
    return qdq, QParams(scale, zero)


class ScaledQDQ(torch.autograd.Function):
    """:func:`scaled_sym_qdq`'s values for tuning, with hand-written gradients for ``v`` and the
    factor (autograd's straight-through ones, the scale's per-group sum kept in float32)."""

    @staticmethod
    def forward(ctx: Any, grouped, base_scale, factor, v, bits: int) -> torch.Tensor:
        levels = 2 ** (bits - 1)
        scale, unclamped = _scale(base_scale, factor)
        scale32 = scale.float()
        out, codes, inside = rounded_codes(grouped, v, scale32, levels)
        ctx.save_for_backward(grouped, codes, inside, scale32, base_scale, unclamped)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grouped, codes, inside, scale32, base_scale, unclamped = ctx.saved_tensors
        grad_v, per_group = straight_through_grads(
            grad, grouped, codes, inside, scale32, ctx.needs_input_grad[3], ctx.needs_input_grad[2]
        )
        grad_factor = None
        if per_group is not None:
            grad_factor = (per_group * unclamped * base_scale).squeeze(-1)
        return None, None, grad_factor, grad_v, None


def tuning_qdq(
    grouped: torch.Tensor, bits: int, base_scale: torch.Tensor, factor: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """:func:`scaled_sym_qdq` (values only) for the tuning loop: one autograd step."""
    return ScaledQDQ.apply(grouped, base_scale, factor, v, bits)


def outlier_suppressed_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error with the largest :data:`OUTLIER_FRACTION` of errors counted as zero."""
    diff = (pred.float() - target.float()).reshape(-1)
    count = max(1, int(diff.numel() * OUTLIER_FRACTION))
    with torch.no_grad():
        worst = diff.abs().topk(count).indices
        keep = torch.ones_like(diff).index_fill_(0, worst, 0.0)
    return (diff * keep).square().mean()
