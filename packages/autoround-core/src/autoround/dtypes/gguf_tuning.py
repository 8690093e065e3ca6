"""SignRound on GGUF block types: differentiable block fields (Intel's "enhanced GGUF").

SignRound tunes each weight's rounding offset ``v`` and a factor per group (sub-block) on its
scale. The group's scale (and min) comes either from its min/max shrunk by clipping factors
(SignRound's classic path, :func:`minmax_scale`) or from llama.cpp's own search
(``enable_alg_ext``, :func:`searched_scale`: the importance-weighted search where the block's
squared inputs are known) times a tuned factor. From the groups' scales, :func:`tuned_values`
builds the block's fields as llama.cpp's ``_ref`` quantizers do (a K-quant's integer sub-block
scales and mins against the super-block's largest, ``d`` and ``dmin`` stored as fp16) and the
rounded levels, with straight-through gradients through every rounding, so the loss reaches
the factors through the super-block fields and the levels. The kept result is exactly what a
GGUF file of it dequantizes to.

The legacy asymmetric types (``q4_1``, ``q5_1``) take the classic path only (the searched-scale
calls carry no symmetry, and ``q4_0`` / ``q4_1`` differ only in it).
"""

from __future__ import annotations

import torch

from autoround.dtypes.base import QParams
from autoround.dtypes.gguf_blocks import BlockType
from autoround.dtypes.gguf_legacy import fp16, importance
from autoround.dtypes.gguf_search import make_q3_quants, make_qkx_quants, make_qx_quants

#: A K-quant's integer sub-block scale range: [0, n] (asymmetric) or [-n, n - 1] (symmetric).
SCALE_LEVELS = {"q2_k": 15, "q3_k": 32, "q4_k": 63, "q5_k": 63, "q6_k": 128}
#: llama.cpp's ``_ref`` searches of the asymmetric K-quants: (rmin, rdelta, nstep, use_mad).
REF_SEARCH = {"q2_k": (-0.5, 0.1, 15, True), "q4_k": (-1.0, 0.1, 20, False), "q5_k": (-0.5, 0.1, 15, False)}
_SUPER = 256


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even, with the identity's gradient."""
    return (torch.round(x) - x).detach() + x


def fp16_ste(x: torch.Tensor) -> torch.Tensor:
    """The fp16 value of ``x`` (as float32), with the identity's gradient."""
    return (fp16(x) - x).detach() + x


def _half(block: BlockType) -> int:
    return 2 ** (block.bits - 1)


def _largest_signed(per: torch.Tensor) -> torch.Tensor:
    return per.gather(-1, per.abs().argmax(dim=-1, keepdim=True))


def _k_fields(
    block: BlockType, scale: torch.Tensor, the_min: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A K-quant's floats (per row) and integers from each sub-block's scale (and min)."""
    n = SCALE_LEVELS[block.name]
    subs = _SUPER // block.group
    per = scale.reshape(-1, subs)
    if block.sym:
        top = _largest_signed(per.detach())
        live = top != 0
        iscale = -n / torch.where(live, top, 1.0)
        sc = (
            round_ste(iscale * per).clamp(-n, n - 1)
            if block.name == "q3_k"
            else round_ste(iscale * per).clamp(max=n - 1)
        )
        d = torch.where(live, fp16_ste(1 / iscale), 0.0)
        return d.repeat_interleave(subs, dim=0), sc.reshape(-1, 1)
    assert the_min is not None
    columns = []
    ints = []
    for values in (per, the_min.reshape(-1, subs)):
        top = values.detach().amax(-1, keepdim=True).clamp(min=0.0)
        inv = torch.where(top > 0, n / torch.where(top > 0, top, 1.0), 0.0)
        ints.append(round_ste(inv * values).clamp(0, n).reshape(-1))
        columns.append(fp16_ste(top / n))
    return torch.cat(columns, dim=1).repeat_interleave(subs, dim=0), torch.stack(ints, dim=1)


def tuned_values(
    block: BlockType,
    x: torch.Tensor,
    scale: torch.Tensor,
    the_min: torch.Tensor | None,
    v: torch.Tensor | float,
) -> tuple[torch.Tensor, QParams]:
    """Values (float32, differentiable) and fields of grouped ``x`` from each group's ``scale``
    (and, asymmetric, ``the_min`` >= 0: a value is ``scale * level - the_min``), offsets ``v``."""
    if block.super_block:
        floats, ints = _k_fields(block, scale, the_min)
        step = floats[:, 0] * ints[:, 0]
        shift = floats[:, 1] * ints[:, 1] if not block.sym else torch.zeros_like(step)
    else:
        d = fp16_ste(scale)
        floats = (
            d[:, None]
            if block.sym
            else torch.stack([d, fp16_ste(-the_min if the_min is not None else d)], dim=1)
        )
        ints = torch.full_like(d, float(block.offset))[:, None]
        step, shift = d, (torch.zeros_like(d) if block.sym else -floats[:, 1])
    live = (step != 0)[:, None]
    safe = torch.where(live, step[:, None], 1.0)
    levels = round_ste((x + shift[:, None]) / safe + v).clamp(-block.offset, 2**block.bits - 1 - block.offset)
    levels = torch.where(live, levels, 0.0)
    values = step[:, None] * levels - shift[:, None]
    return values, QParams(floats.detach(), ints.detach())


def minmax_range(grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's (min, max), min at most 0 (as llama.cpp's asymmetric searches start)."""
    x = grouped.detach().float()
    return x.amin(-1).clamp(max=0.0), x.amax(-1)


def minmax_scale(
    block: BlockType,
    group_range: tuple[torch.Tensor, torch.Tensor],
    min_scale: torch.Tensor | float,
    max_scale: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SignRound's classic scale from the clipped range: asymmetric ``(max * f_max - min * f_min)
    / (2**bits - 1)`` with min ``-min * f_min``; symmetric the signed extreme times ``f_max``
    over ``-2**(bits-1)`` (``q8_0``: ``max|x| / 127``)."""
    low, high = group_range
    if not block.sym:
        return (high * max_scale - low * min_scale) / (2**block.bits - 1), -low * min_scale
    if block.name == "q8_0":
        return torch.maximum(-low, high) * max_scale / 127, None
    extreme = torch.where(-low > high, low, high)
    return extreme * max_scale / -_half(block), None


def searched_scale(
    block: BlockType, grouped: torch.Tensor, qw: torch.Tensor | None, sigma2: torch.Tensor | None
) -> torch.Tensor:
    """llama.cpp's search of each group's scale (and min), before its block fields are stored:
    (groups, 1) ``[scale]`` or (groups, 2) ``[scale, the_min]``. ``qw`` (groups, group) is the
    importance and ``sigma2`` (groups, 1) its companion, or both None for the ``_ref`` search."""
    x = grouped.float()
    weights = importance(x, qw, sigma2) if qw is not None and sigma2 is not None else None
    if block.sym:
        if block.name == "q8_0":
            return x.abs().amax(-1, keepdim=True) / 127
        if weights is None and block.name == "q3_k":
            return make_q3_quants(x, 4)[0][:, None]
        if weights is None and not block.super_block:
            return _largest_signed(x) / -_half(block)
        half = 32 if block.name == "q6_k" else _half(block)
        return make_qx_quants(x, half, qw if block.name == "q6_k" else weights)[0][:, None]
    if weights is None:
        rmin, rdelta, nstep, mad = REF_SEARCH[block.name]
        base = x.abs() if block.name == "q2_k" else torch.sqrt((x * x).mean(-1, keepdim=True)) + x.abs()
        scale, the_min, _ = make_qkx_quants(x, base, 2**block.bits - 1, rmin, rdelta, nstep, mad)
    else:
        scale, the_min, _ = make_qkx_quants(x, weights, 2**block.bits - 1, -0.9, 0.05, 36, False)
    return torch.stack([scale, the_min], dim=1)


def super_block_sigma2(grouped: torch.Tensor, block: BlockType) -> torch.Tensor:
    """The ``sigma2`` llama.cpp's K-quant searches weigh with: the super-block's mean square
    (``q2_k``) or twice it, per row (groups, 1)."""
    x = grouped.float()
    subs = _SUPER // block.group
    total = (x * x).reshape(-1, subs * block.group).sum(-1, keepdim=True)
    factor = 1.0 if block.name == "q2_k" else 2.0
    return (factor * total / _SUPER).repeat_interleave(subs, dim=0)
