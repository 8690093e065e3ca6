"""Decoder-block lists and Linear-like layers, found generically in any transformers model."""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.cache
def _linear_types() -> tuple[type[nn.Module], ...]:
    """``nn.Linear`` and transformers' ``Conv1D`` (GPT-2 style models store Linear weights
    transposed in it), imported on first use: what imports this module without a model
    (model-free RTN, the format registry) does not import transformers."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency, this is belt and braces
        return (nn.Linear,)
    return (nn.Linear, Conv1D)


def is_linear_like(module: nn.Module) -> bool:
    """True for the layer types weight quantization applies to (``nn.Linear``, ``Conv1D``)."""
    return isinstance(module, _linear_types())


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a Linear-like layer, whatever its weight layout."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    in_features, out_features = _weight(module).shape  # Conv1D keeps (in, out)
    return out_features, in_features


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), a view for Conv1D."""
    return _weight(module).t() if not isinstance(module, nn.Linear) else module.weight


def _weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is a {type(weight).__name__}, not a tensor")
    return weight


def _has_linear(module: nn.Module) -> bool:
    return any(is_linear_like(m) for m in module.modules())


def find_block_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.ModuleList``s that hold the repeated decoder blocks.

    The longest ModuleList whose entries contain Linear-like layers wins (``model.layers`` for
    llama-like models). Raises ValueError naming the lists it saw when there is none.
    """
    candidates: list[tuple[int, str]] = []
    seen: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            seen.append(f"{name} ({len(module)} x {type(module[0]).__name__})")
            if all(_has_linear(block) for block in module):
                candidates.append((len(module), name))
    if not candidates:
        raise ValueError(
            f"no decoder block list found in {type(model).__name__}: looked for an nn.ModuleList of "
            f"blocks containing Linear layers; ModuleLists seen: {seen or 'none'}. "
            f"Pass block_name='<dotted.path.to.ModuleList>'"
        )
    best = max(count for count, _ in candidates)
    return [next(name for count, name in candidates if count == best)]
