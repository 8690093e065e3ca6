"""llama.cpp's scale searches (``ggml-quants.c``), vectorized over blocks in torch.

Every function takes ``x`` of shape (blocks, n) in float32 (one row per (sub-)block) and works
on all rows at once; where llama.cpp loops over candidate scales, so do these, keeping each
row's best with ``torch.where``. Where llama.cpp updates one element at a time (the coordinate
descent of ``make_q3_quants`` and ``make_qp_quants``) the loop runs over the n columns, still
vectorized over rows. The arithmetic follows llama.cpp's op order in float32 (its
``nearest_int`` rounds half to even, as ``torch.round`` does); its sums run sequentially, ours
pairwise, so a near-tie can rarely go the other way.

Returned codes ``L`` are float tensors of integers, as llama.cpp stores them before packing.
"""

from __future__ import annotations

import torch

#: llama.cpp's threshold below which a group counts as all zero.
GROUP_MAX_EPS = 1e-15


def _signed_max(x: torch.Tensor) -> torch.Tensor:
    """Per row, the element of largest magnitude (the first one on ties), (blocks, 1)."""
    index = x.abs().argmax(dim=-1, keepdim=True)
    return x.gather(-1, index)


def make_qx_quants(
    x: torch.Tensor, nmax: int, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric scale search (``make_qx_quants`` with ``rmse_type`` 1): returns (scale (blocks,),
    codes in [0, 2 nmax - 1]). ``weights`` None weighs each element by its square."""
    w = weights if weights is not None else x * x
    vmax = _signed_max(x)
    zero = vmax.abs() < GROUP_MAX_EPS
    safe = torch.where(zero, torch.ones_like(vmax), vmax)

    def trial(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = torch.round(iscale * x).clamp(-nmax, nmax - 1)
        return levels, (w * x * levels).sum(-1), (w * levels * levels).sum(-1)

    levels, sumlx, suml2 = trial(-nmax / safe)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, 1.0), 0.0)
    best = scale * sumlx
    for step in [s for s in range(-9, 10) if s != 0]:
        offset = torch.tensor(0.1, dtype=torch.float32) * step
        cand, slx, sl2 = trial(-(nmax + offset) / safe)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        levels = torch.where(better[:, None], cand, levels)
        scale = torch.where(better, slx / torch.where(sl2 > 0, sl2, 1.0), scale)
        best = torch.where(better, scale * slx, best)
    zero = zero[:, 0]
    return torch.where(zero, 0.0, scale), torch.where(zero[:, None], 0.0, levels + nmax)


def make_q3_quants(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``make_q3_quants`` with ``do_rmse``: the signed scale (blocks,) and codes in [0, 2 nmax - 1],
    refined element by element (up to 5 passes) as llama.cpp does."""
    vmax = _signed_max(x)
    zero = (vmax.abs() < GROUP_MAX_EPS)[:, 0]
    iscale = -nmax / torch.where(zero[:, None], torch.ones_like(vmax), vmax)
    levels = torch.round(iscale * x).clamp(-nmax, nmax - 1)
    w = x * x
    sumlx = (w * x * levels).sum(-1)
    suml2 = (w * levels * levels).sum(-1)
    for _ in range(5):
        changed = torch.zeros_like(zero)
        for i in range(x.shape[1]):
            xi, wi, li = x[:, i], w[:, i], levels[:, i]
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            new = torch.round(xi * sl2 / torch.where(slx > 0, slx, 1.0)).clamp(-nmax, nmax - 1)
            slx_new = slx + wi * xi * new
            sl2_new = sl2 + wi * new * new
            take = (
                (slx > 0)
                & (new != li)
                & (sl2_new > 0)
                & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new)
            )
            levels[:, i] = torch.where(take, new, li)
            sumlx = torch.where(take, slx_new, sumlx)
            suml2 = torch.where(take, sl2_new, suml2)
            changed |= take
        if not bool(changed.any()):
            break
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, 1.0), 0.0)
    return torch.where(zero, 0.0, scale), torch.where(zero[:, None], 0.0, levels + nmax)


def make_qkx_quants(
    x: torch.Tensor,
    weights: torch.Tensor,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric scale-and-min search (``make_qkx2_quants`` / ``make_qkx3_quants``, which differ
    only in their default weights): returns (scale (blocks,), the_min (blocks,) >= 0, codes in
    [0, nmax]); a value is ``scale * code - the_min``."""
    vmin = x.amin(-1).clamp(max=0.0)
    vmax = x.amax(-1)
    flat = vmax <= vmin
    sum_w = weights.sum(-1)
    sum_x = (weights * x).sum(-1)

    def error(scale: torch.Tensor, vmin_: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        diff = scale[:, None] * levels + vmin_[:, None] - x
        return (weights * (diff.abs() if use_mad else diff * diff)).sum(-1)

    def codes(factor: torch.Tensor | int, low: torch.Tensor) -> torch.Tensor:
        # llama.cpp divides by (max - min) with the min of the best candidate so far
        span = torch.where(flat, 1.0, vmax - low)
        return torch.round((factor / span)[:, None] * (x - low[:, None])).clamp(0, nmax)

    span = torch.where(flat, 1.0, vmax - vmin)
    scale = 1 / (nmax / span)
    levels = codes(nmax, vmin)
    low = vmin
    best = error(scale, low, levels)
    f32 = torch.float32
    for step in range(nstep + 1):
        factor = torch.tensor(rmin, dtype=f32) + torch.tensor(rdelta, dtype=f32) * step + nmax
        cand = codes(factor, low)
        sum_l = (weights * cand).sum(-1)
        sum_l2 = (weights * cand * cand).sum(-1)
        sum_xl = (weights * cand * x).sum(-1)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe_det = torch.where(ok, det, 1.0)
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        positive = this_min > 0
        this_scale = torch.where(positive, sum_xl / torch.where(sum_l2 > 0, sum_l2, 1.0), this_scale)
        this_min = torch.where(positive, 0.0, this_min)
        cur = error(this_scale, this_min, cand)
        better = ok & (cur < best) & ~flat
        levels = torch.where(better[:, None], cand, levels)
        best = torch.where(better, cur, best)
        scale = torch.where(better, this_scale, scale)
        low = torch.where(better, this_min, low)
    scale = torch.where(flat, 0.0, scale)
    levels = torch.where(flat[:, None], 0.0, levels)
    return scale, -low, levels


def make_qp_quants(x: torch.Tensor, nmax: int, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative scale search with per-element weights (``make_qp_quants``, used to quantize
    a super-block's sub-block scales and mins): returns (scale (blocks,), codes in [0, nmax])."""
    vmax = x.amax(-1).clamp(min=0.0)
    zero = vmax < GROUP_MAX_EPS
    safe = torch.where(zero, 1.0, vmax)[:, None]
    iscale = nmax / safe
    first = torch.round(iscale * x)
    best = (weights * (x - (1 / iscale) * first) ** 2).sum(-1)
    for step in [s for s in range(-4, 5) if s != 0]:
        trial = (torch.tensor(0.1, dtype=torch.float32) * step + nmax) / safe
        levels = torch.round(trial * x).clamp(max=nmax)
        diff = x - (1 / trial) * levels
        mse = (weights * diff * diff).sum(-1)
        better = mse < best
        best = torch.where(better, mse, best)
        iscale = torch.where(better[:, None], trial, iscale)
    levels = torch.round(iscale * x).clamp(max=nmax)
    sumlx = (weights * x * levels).sum(-1)
    suml2 = (weights * levels * levels).sum(-1)
    for _ in range(5):
        changed = torch.zeros_like(zero)
        for i in range(x.shape[1]):
            xi, wi, li = x[:, i], weights[:, i], levels[:, i]
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            valid = (slx > 0) & (sl2 > 0)
            new = torch.round(xi * sl2 / torch.where(valid, slx, 1.0)).clamp(max=nmax)
            slx_new = slx + wi * xi * new
            sl2_new = sl2 + wi * new * new
            take = valid & (new != li) & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new)
            levels[:, i] = torch.where(take, new, li)
            sumlx = torch.where(take, slx_new, sumlx)
            suml2 = torch.where(take, sl2_new, suml2)
            changed |= take
        if not bool(changed.any()):
            break
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, 1.0), 0.0)
    return torch.where(zero, 0.0, scale), torch.where(zero[:, None], 0.0, levels)
