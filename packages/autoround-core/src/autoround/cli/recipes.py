"""Recipes: named bundles of tuning settings, as data. The recipe commands select one."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

#: Recipe name -> settings (Intel auto-round's values).
RECIPES: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "default": MappingProxyType({"iters": 200, "nsamples": 128, "seqlen": 2048, "batch_size": 8}),
        "best": MappingProxyType({"iters": 1000, "nsamples": 512, "seqlen": 2048, "batch_size": 8}),
        "light": MappingProxyType(
            {"iters": 50, "nsamples": 128, "seqlen": 2048, "batch_size": 8, "lr": 5e-3}
        ),
        "opt-rtn": MappingProxyType({"iters": 0}),
        "rtn": MappingProxyType({"iters": 0, "disable_opt_rtn": True}),
    }
)


def recipe(name: str) -> MappingProxyType[str, Any]:
    """Settings of a recipe; unknown names raise ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; allowed: {sorted(RECIPES)}")
    return RECIPES[name]
