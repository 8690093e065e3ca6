"""SignRound from a searched scale: Intel's "algorithm extension" (``enable_alg_ext``), the
SignRound side of it.

Plain SignRound derives each group's scale from its min/max and tunes two clipping factors that
can only shrink that range. With ``enable_alg_ext`` a layer whose data type searches scales
(``DataType.searches_scale``: symmetric integers, ``mx_fp`` and NVFP4) instead starts from the
scale optimized RTN would pick (``DataType.searched_scale``: the importance-weighted search of
:mod:`autoround.dtypes.int_search`, the importance being the squared inputs the block's
full-precision forward feeds the layer; here followed by the least-squares refinement of
:mod:`autoround.dtypes.int_refine`, which Intel does not do) and tunes one factor on it
(``DataType.scaled_qdq`` / ``scaled_tuning_qdq``, :mod:`autoround.dtypes.int_scaled`), kept in
[0, 2], so tuning can widen the range as well as shrink it. Below 4 bits the block loss also
leaves out the 0.1 % of output elements with the largest error (a few outlier activations
otherwise dominate the signed gradients). Checkpoints are ordinary symmetric integer
checkpoints: the stored scale is ``base * factor`` in fp16 and the zero point the constant
``2**(bits-1)``. For ``mx_fp`` and NVFP4 the searched start is, as in Intel's SignRoundV2,
a multiplier of each group maximum (Intel's ``init_scale``: :mod:`autoround.dtypes.mx_search`,
:mod:`autoround.dtypes.nv_fp_search`) that the tuned factor multiplies again.

It is autoround's default (Intel's is off): on SmolLM2 (cpu-small, 20 iterations) it turns
W2A16G64 perplexity from 1.4 % worse than Intel's classic SignRound into 26 % better, and gains
0.3-0.8 at W4A16; ``docs/signround.md`` has the run.
"""

from __future__ import annotations

import torch

#: Range the factor on a searched scale is kept in (Intel's bound for this path).
FACTOR_BOUNDS = (0.0, 2.0)
#: The factor's default learning rate as a share of the rounding lr. Intel's is 1: a factor
#: that starts at the searched scale is already near its best, and full steps (5 % of the scale
#: per step at 20 iterations) overshoot it; docs/signround.md has the runs.
FACTOR_LR_SHARE = 0.25
#: Share of a batch's output elements, largest error first, left out of the low-bit loss.
OUTLIER_FRACTION = 1e-3


def outlier_suppressed_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error with the largest :data:`OUTLIER_FRACTION` of errors counted as zero."""
    diff = (pred.float() - target.float()).reshape(-1)
    count = max(1, int(diff.numel() * OUTLIER_FRACTION))
    with torch.no_grad():
        worst = diff.abs().topk(count).indices
        keep = torch.ones_like(diff).index_fill_(0, worst, 0.0)
    return (diff * keep).square().mean()
