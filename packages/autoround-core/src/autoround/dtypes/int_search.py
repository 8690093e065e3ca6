"""Scale search of "optimized RTN" for symmetric integers (Intel auto-round's ``opt_rtn_int_sym``).

For every group the search tries ``2 * S + 1`` candidate scales around the full-range scale
(``-group_max / nmax``, ``group_max`` the group's value of largest magnitude, ``nmax = 2**(bits-1)``)
and keeps the one with the smallest importance-weighted squared error
``sum_i imp_i * (s * clamp(round(w_i / s), -nmax, nmax - 1) - w_i)**2``. Candidate ``k``
(``k`` in ``-S..S``) uses the inverse scale ``-(nmax - step * k) / group_max``: 4 and 3 bits
(and 5-8) use ``S = 100`` steps of ``0.03 * nmax / 4`` (the inverse scale spans ``nmax * (1 ± 0.75)``),
2 bits ``S = 90`` steps of ``0.01``. Ties keep the earliest candidate in Intel's order
(``0, -S, ..., -1, 1, ..., S``), so the result is Intel's bit for bit.

The math runs in the weight's dtype exactly as Intel's loop does (products rounded to that dtype,
squared errors in float32); here it is batched over chunks of candidates instead of a Python
loop over them. The importance (``imatrix``) is the mean squared input activation of each input
channel; zeros in it are repaired as Intel does (borrowed from llama.cpp's GGUF code).
"""

from __future__ import annotations

import torch

from autoround.dtypes.int_formulas import clamp_scale_magnitude

#: Slots the search's histograms spread out-of-grid crossings over (see :func:`_approx_losses`).
SPREAD = 32
#: Bytes of float32 temporaries one chunk of candidates may use (the search allocates about three
#: (candidates, groups, group_width) buffers per chunk).
DEFAULT_CHUNK_BYTES = 64 * 2**20


def search_grid(bits: int, ratio: float = 0.75) -> tuple[int, float]:
    """``(S, step)``: candidates ``k`` in ``-S..S`` with inverse-scale multiplier ``nmax - step * k``.

    ``ratio`` is Intel's ``AR_SEARCH_SCALE_RATIO`` (default 0.75); 2 bits ignore it.
    """
    nmax = int(2.0 ** (bits - 1))
    if bits == 2:
        return 18 * 5, 0.01
    grid = 200
    search_min = nmax * ratio
    step = search_min / grid * 2
    return int(search_min / step), step


def candidate_multipliers(bits: int, ratio: float = 0.75) -> list[float]:
    """Inverse-scale multipliers ``-(nmax - step * k)`` in Intel's evaluation order (k = 0 first)."""
    nmax = int(2.0 ** (bits - 1))
    count, step = search_grid(bits, ratio)
    order = [0, *range(-count, 0), *range(1, count + 1)]
    return [-(nmax - step * k) for k in order]


def reciprocal(x: torch.Tensor) -> torch.Tensor:
    """``1 / x``, and 0 where ``|x|`` is below 1e-30 (1e-5 for fp16), as Intel's ``get_reciprocal``."""
    eps = 1e-5 if x.dtype == torch.float16 else 1e-30
    safe = x.abs() >= eps
    return torch.where(safe, 1.0 / torch.where(safe, x, torch.ones_like(x)), torch.zeros_like(x))


def group_importance(
    imatrix: torch.Tensor, grouped_weight: torch.Tensor, group_size: int, bits: int
) -> torch.Tensor:
    """Per-element importance (groups, group_width), float32, from a per-input-channel imatrix.

    ``grouped_weight`` is the layer's weight as :func:`autoround.dtypes.to_groups` cuts it (rows
    whole groups, zero-padded). The imatrix (``in_features``,) is padded with 1e-5 to whole groups,
    repeated for every output row and, where it holds zeros, repaired per group as Intel does: a
    group with more than ``group_size // 2`` zeros falls back to ``|w|`` (<= 3 bits) or
    ``|w| + sqrt(sum(w**2) / 32)``; other zeros take the mean of the group's non-zero entries.
    """
    width = grouped_weight.shape[1]
    per_row = imatrix.reshape(1, -1).to(torch.float32)
    pad = -per_row.shape[1] % width if width <= per_row.shape[1] else 0  # per-tensor (group 0): none
    if pad:
        per_row = torch.nn.functional.pad(per_row, (0, pad), value=1e-5)
    imp = per_row.expand(grouped_weight.numel() // per_row.numel(), -1).reshape(grouped_weight.shape)
    if bool(torch.min(per_row) != 0):  # every row repeats it: no zero there, none anywhere
        return imp
    imp = imp.clone()
    zero_cnt = torch.sum(imp <= 1e-30, dim=-1)
    half = group_size // 2
    fallback = zero_cnt > half
    if bool(fallback.any()):
        w = grouped_weight
        spread = torch.sqrt(torch.sum(w.pow(2), dim=-1, keepdim=True) / 32)
        repl = w.abs() if bits <= 3 else w.abs() + spread
        imp[fallback] = repl.to(imp.dtype)[fallback]
    partial = (zero_cnt > 0) & (zero_cnt <= half)
    if bool(partial.any()):
        mean = (torch.sum(imp, dim=-1) / (imp.shape[1] - zero_cnt)).view(-1, 1).expand(-1, imp.shape[1])
        where = imp == 0
        imp[where] = mean[where]
    return imp


def _exact_losses(
    grouped: torch.Tensor, recip_max: torch.Tensor, mults: torch.Tensor, nmax: int, imp: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's loss and scale of candidate multipliers ``mults`` (K, G, 1) float32, in Intel's op order.

    Returns losses (K, G) float32 and scales (K, G) in ``grouped``'s dtype.
    """
    iscale = (mults * recip_max.unsqueeze(0)).to(grouped.dtype)  # (K, G, 1)
    data = grouped.unsqueeze(0)
    q = torch.mul(iscale, data).round_().clamp_(-nmax, nmax - 1)
    scale = reciprocal(iscale)
    err = q.mul_(scale).sub_(data)
    err = err.to(torch.float32) if err.dtype != torch.float32 else err
    err = err.square_()
    if imp is not None:
        err.mul_(imp.unsqueeze(0))
    return err.sum(dim=-1), scale.squeeze(-1)


def _approx_losses(
    grouped: torch.Tensor,
    recip_max: torch.Tensor,
    bits: int,
    ratio: float,
    imp: torch.Tensor | None,
    histogram_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Every candidate's loss (G, K) in ``histogram_dtype``, up to a positive factor and a constant
    per group (all the ranking within a group needs), candidates in ascending multiplier order.

    Uses ``loss = s**2 * sum(imp * L**2) - 2 s * sum(imp * w * L) + sum(imp * w**2)``: along the
    uniform grid of multipliers, each element's code ``L`` only steps at half-integer crossings
    (at most ``nmax`` of them), so both sums are histograms of those crossings (scatter-add)
    followed by a cumulative sum over the grid, instead of ``K`` full passes over the weights.
    The last term is the same for every candidate of a group and is left out. Float rounding of
    the products is ignored here; the caller re-scores the best candidates exactly where it needs
    Intel's pick.
    """
    nmax = int(2.0 ** (bits - 1))
    count, step = search_grid(bits, ratio)
    k_total = 2 * count + 1
    m_min = nmax - step * count
    groups = grouped.shape[0]
    w = grouped.to(torch.float32)
    t = w * recip_max.to(torch.float32)  # w / group_max, in [-1, 1]
    acc = histogram_dtype
    qw = imp.to(acc) if imp is not None else torch.ones_like(w, dtype=acc)
    # code magnitude grows by one at m = (n + 0.5) / |t|, grid index (m - m_min) / step; it stops
    # at nmax (t > 0) or nmax - 1
    z = torch.reciprocal(t.abs().clamp_(min=1e-30).mul_(step))
    b_src = (qw * w.to(acc)).mul_(torch.sign(t).neg_().to(acc))
    # Histogram row per group: grid index j >= 1 sits in slot SPREAD - 1 + j; crossings at or before
    # the grid's start go to slots 0..SPREAD-1 (summed into j = 0 afterwards), those past its end to
    # the SPREAD slots after it (dropped). Spreading them by element position keeps most of a row's
    # adds off one address, which a scatter-add otherwise serializes on (~3x slower).
    spread = torch.arange(w.shape[1], device=w.device).remainder_(SPREAD).to(torch.float32).view(1, -1)
    past = spread + (SPREAD + k_total - 1)
    first = z * 0.5 + (SPREAD - 1 - m_min / step)  # slot of crossing n = 0
    acc_a = torch.zeros(groups, 2 * SPREAD + k_total - 1, dtype=acc, device=w.device)
    acc_b = torch.zeros_like(acc_a)
    buf = torch.empty_like(z)
    k = torch.empty_like(z, dtype=torch.long)
    weighted = torch.empty_like(qw)
    for n in range(nmax):
        torch.add(first, z, alpha=n, out=buf).ceil_().clamp_(min=spread, max=past)
        if n == nmax - 1:  # negative weights stop one level earlier (codes end at nmax - 1)
            buf = torch.where(t < 0, past, buf)
        k.copy_(buf)
        acc_a.scatter_add_(1, k, torch.mul(qw, 2 * n + 1, out=weighted))
        acc_b.scatter_add_(1, k, b_src)
    acc_a[:, SPREAD - 1] = acc_a[:, :SPREAD].sum(dim=1)
    acc_b[:, SPREAD - 1] = acc_b[:, :SPREAD].sum(dim=1)
    # float32 histograms stay float32 here too: casting (G, K) tables to float64 costs more than
    # the ranking gains from it
    a_sum = acc_a[:, SPREAD - 1 : SPREAD - 1 + k_total].cumsum(1)
    b_sum = acc_b[:, SPREAD - 1 : SPREAD - 1 + k_total].cumsum(1)
    # with s = -group_max / m the loss is group_max**2 * (a / m**2 + 2 * b / (m * group_max));
    # the ranking within a group needs only the bracket (and an all-zero group ranks all equal)
    inv_m = 1.0 / (m_min + step * torch.arange(k_total, dtype=torch.float64, device=w.device))
    ranked = a_sum.mul_(inv_m.square().to(acc))
    return ranked.add_(b_sum.mul_(inv_m.to(acc)).mul_(2 * recip_max.to(acc)))


@torch.no_grad()
def search_sym_scale(
    grouped: torch.Tensor,
    bits: int,
    importance: torch.Tensor | None = None,
    ratio: float = 0.75,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    exhaustive: bool | None = None,
    rescore: int | None = None,
    histogram_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Best signed scale of every group, shape (groups, 1), in ``grouped``'s dtype.

    ``grouped`` is (groups, group_width); ``importance`` is None (uniform) or a float32 tensor of
    the same shape (see :func:`group_importance`).

    ``exhaustive=True`` scores every candidate with Intel's exact formula (batched over chunks of
    candidates of about ``chunk_bytes``). The default for <= 6 bits ranks all candidates with
    :func:`_approx_losses` and re-scores the ``rescore`` best (plus Intel's first candidate)
    exactly; the pick is Intel's unless the approximation misranks the winner by more than
    ``rescore`` places (default 8 for float32, 32 for 16-bit floats, whose rounding of the
    inverse scale makes the approximation coarser). ``histogram_dtype=torch.float32`` ranks about
    1.4x faster on CPUs but misses Intel's pick in a few groups per thousand; it is for starting
    points that are tuned afterwards, not for optimized RTN's result.
    """
    nmax = int(2.0 ** (bits - 1))
    imax = grouped.abs().argmax(dim=-1, keepdim=True)
    group_max = torch.take_along_dim(grouped, imax, dim=-1)  # (G, 1)
    recip_max = reciprocal(group_max)
    mults = torch.tensor(candidate_multipliers(bits, ratio), dtype=torch.float64).to(torch.float32)
    mults = mults.to(grouped.device)
    if exhaustive is None:
        exhaustive = bits > 6
    if exhaustive:
        per_candidate = grouped.numel() * 4 * 3
        chunk = max(1, min(len(mults), chunk_bytes // max(per_candidate, 1)))
        loss_chunks: list[torch.Tensor] = []
        scale_chunks: list[torch.Tensor] = []
        for start in range(0, len(mults), chunk):
            loss, scale = _exact_losses(
                grouped, recip_max, mults[start : start + chunk].view(-1, 1, 1), nmax, importance
            )
            loss_chunks.append(loss)
            scale_chunks.append(scale)
        best = torch.argmin(torch.cat(loss_chunks, dim=0), dim=0)  # first minimum: Intel's strict "<"
        return torch.take_along_dim(torch.cat(scale_chunks, dim=0), best.view(1, -1), dim=0).view(-1, 1)

    if rescore is None:
        rescore = 8 if grouped.dtype == torch.float32 else 32
    count, step = search_grid(bits, ratio)
    approx = _approx_losses(grouped, recip_max, bits, ratio, importance, histogram_dtype)  # (G, K)
    if rescore == 0:  # the ranking's own pick; grid j holds multiplier -(nmax - step * count + step * j)
        m_min = nmax - step * count
        grid = torch.arange(approx.shape[1], dtype=torch.float64, device=grouped.device)
        mult = (-(m_min + step * grid)).to(torch.float32)[approx.argmin(dim=1)].view(-1, 1)
        return reciprocal((mult * recip_max).to(grouped.dtype))
    top = approx.topk(min(rescore, approx.shape[1]), dim=1, largest=False).indices  # grid index j
    # grid j has k = count - j; Intel's order position: k = 0 -> 0, k < 0 -> k + count + 1, k > 0 -> count + k
    k = count - top
    pos = torch.where(k == 0, 0, torch.where(k < 0, k + count + 1, count + k))
    pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1).sort(dim=1).values.t()  # (T+1, G)
    losses, scales = _exact_losses(grouped, recip_max, mults[pos].unsqueeze(-1), nmax, importance)
    best = torch.argmin(losses, dim=0)  # earliest in Intel's order among equals
    return torch.take_along_dim(scales, best.view(1, -1), dim=0).view(-1, 1)


def opt_rtn_sym_codes(
    grouped: torch.Tensor,
    bits: int,
    importance: torch.Tensor | None = None,
    threshold: float = 1e-5,
    ratio: float = 0.75,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    exact: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed codes (groups, width) in ``[-nmax, nmax - 1]`` and the searched scale (groups, 1).

    Codes are ``round(w / s)`` with ``s`` in ``grouped``'s dtype (as Intel computes them, before
    the scale is stored as fp16). ``exact=True`` is Intel's pick bit for bit; ``False`` takes the
    float32 ranking's own pick without re-scoring (about 2x faster; it differs from Intel's in a
    few groups per thousand, by a near-equal loss).
    """
    nmax = int(2.0 ** (bits - 1))
    if exact:
        searched = search_sym_scale(grouped, bits, importance, ratio, chunk_bytes)
    else:
        searched = search_sym_scale(
            grouped, bits, importance, ratio, chunk_bytes, rescore=0, histogram_dtype=torch.float32
        )
    scale = clamp_scale_magnitude(searched, threshold)
    codes = grouped.div(scale).round_().clamp_(-nmax, nmax - 1)
    return codes, scale
