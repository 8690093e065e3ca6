"""Straight-through estimators of the float weight types' roundings, as Intel writes them.

Intel 0.16.1 rounds with ``(rounded - x).detach() + x``: the forward value is ``rounded`` (except
that a negative ``x`` rounding to zero comes out +0.0) and the gradient is that of ``x``.
:func:`forward_only` is the same expression without the ``detach`` (gradient 0), what the plain
round-to-nearest helpers use; :func:`straight_through` is the one SignRound's tuning forwards need.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: A rounding's forward value and its input, combined into the rounded output.
Through = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def forward_only(rounded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(rounded - x) + x``: Intel's straight-through forward value, without a gradient."""
    return (rounded - x) + x


def straight_through(rounded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(rounded - x).detach() + x``: Intel's forward value with the gradient of ``x``."""
    return (rounded - x).detach() + x


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` with a straight-through gradient."""
    return straight_through(torch.floor(x), x)


def ceil_ste(x: torch.Tensor) -> torch.Tensor:
    """``ceil(x)`` with a straight-through gradient."""
    return straight_through(torch.ceil(x), x)


def reciprocal_ste(x: torch.Tensor) -> torch.Tensor:
    """``1 / x`` with ``1 / 0`` taken as 0 (Intel's ``get_reciprocal``), differentiable.

    Intel's ``where(x == 0, 0, 1 / x)`` back-propagates ``0 * inf = NaN`` into ``x`` where it
    is 0 (a block whose scale underflows); dividing by 1 there instead gives the same values
    and a zero gradient, so one such block cannot turn a clipping factor into NaN.
    """
    zero = x == 0
    return torch.where(zero, torch.zeros_like(x), 1.0 / torch.where(zero, torch.ones_like(x), x))


def log2_nonzero(x: torch.Tensor, stand_in: float) -> torch.Tensor:
    """``log2(x)``, with ``stand_in`` taken for ``x == 0`` before the logarithm (so the
    gradient there is 0, not Intel's NaN from ``where`` over ``log2(0)``)."""
    return torch.log2(torch.where(x == 0, torch.full_like(x, stand_in), x))
