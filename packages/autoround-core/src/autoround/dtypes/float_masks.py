"""Elementwise 0/1 masks as float32 tensors, for the tuning steps' hot loops.

On CPU, torch's ``bool`` tensors are slow to make and to use: on a 576 x 1536 weight (2
threads, AMD EPYC) ``a == b`` takes 0.52 ms, ``torch.where(mask, a, 0.0)`` 2.1 ms and ``a *
mask`` 4.2 ms, where ``torch.eq(a, b, out=<float32>)`` takes 0.14 ms and ``a * float_mask`` 0.17
ms. The tuning steps therefore keep their masks as float32 ones and zeros and multiply by them:
the same values as ``torch.where(mask, a, 0.0)`` wherever ``a`` is finite (up to the sign of a
zero, which no sign-descent update or sum can see).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Compare = Callable[..., torch.Tensor]


def float_mask(compare: Compare, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``compare(a, b)`` (``torch.eq``, ``torch.ge``, ``torch.le`` ...) as ones and zeros of
    ``a``'s floating dtype (float32 for other dtypes), shaped like ``a``; NaN compares false."""
    dtype = a.dtype if a.is_floating_point() else torch.float32
    out = torch.empty(a.shape, dtype=dtype, device=a.device)
    return compare(a, b, out=out)
