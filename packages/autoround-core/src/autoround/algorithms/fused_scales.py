"""Layers a runtime fuses, and the per-tensor statistic they must share.

vLLM loads a decoder block's q/k/v projections as one ``qkv_proj`` and gate/up as one
``gate_up_proj`` (an MoE expert's w1/w3 as one ``w13``) and keeps one per-tensor scale for the
fused layer (for NVFP4 the largest of the members' global scales would dequantize the others
wrongly, silently). So a data type with a per-tensor statistic
(:class:`~autoround.dtypes.base.SharedStatistic`: NVFP4's max|W|) quantizes every member under the
statistic of the fused weight, as Intel auto-round 0.16.1 does before it quantizes a block (RTN
and tuning alike: ``update_block_global_scale_if_needed`` -> ``update_fused_layer_global_scales``
in ``auto_round/data_type/utils.py``, on by default).

The groups are found from layer names as Intel finds them from module attributes, checked in its
order, the first match deciding: ``q_proj``/``k_proj``/``v_proj`` siblings, diffusers'
``to_q``/``to_k``/``to_v`` (not under a module marked ``is_cross_attention``: its q reads other
inputs), ``gate_proj``/``up_proj``, ``w1``/``w3``. Unlike Intel, a group is formed only where every
member is planned with one data type that has the statistic (Intel shares it among the NVFP4
members of a partly NVFP4 group, which no runtime fuses anyway).

Algorithms call :func:`fused_tensor_stats` on the model, or per block on the block, before they
quantize, and pass each layer's entry (``.get(name)``) on as its ``tensor_stat``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from autoround.dtypes import DTYPES
from autoround.dtypes.base import shared_statistic_type
from autoround.modeling.blocks import linear_weight
from autoround.schemes import Scheme

logger = logging.getLogger(__name__)

#: Sibling layers a runtime fuses into one, in the order Intel checks them.
FUSED_SIBLINGS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"),
    ("to_q", "to_k", "to_v"),
    ("gate_proj", "up_proj"),
    ("w1", "w3"),
)

#: Siblings that are not fused under a module marked ``is_cross_attention`` (diffusers').
_SELF_ATTENTION_ONLY = ("to_q", "to_k", "to_v")


def fused_groups(root: nn.Module, layers: Mapping[str, Scheme]) -> list[tuple[str, ...]]:
    """The groups of planned layers (names relative to ``root``, as in ``layers``) that a runtime
    fuses and whose data type has a per-tensor statistic to share."""
    groups = []
    for parent in sorted({name.rpartition(".")[0] for name in layers}):
        prefix = f"{parent}." if parent else ""
        for siblings in FUSED_SIBLINGS:
            names = tuple(prefix + sibling for sibling in siblings)
            if not all(name in layers for name in names):
                continue
            if siblings == _SELF_ATTENTION_ONLY and _cross_attention(root, parent):
                continue
            if _shares_statistic([layers[name] for name in names]):
                groups.append(names)
            break  # Intel: the first kind of group a module has decides
    return groups


def fused_tensor_stats(root: nn.Module, layers: Mapping[str, Scheme]) -> dict[str, torch.Tensor]:
    """Each fused layer's shared per-tensor statistic (0-dim float32, where its weights live),
    by name relative to ``root``; layers in no such group are absent (they keep their own).

    ``root`` is the model or one block (its weights resident), ``layers`` the planned layers under
    it with their schemes. Call it before any of them is quantized: the statistic is the
    full-precision weights'.
    """
    stats: dict[str, torch.Tensor] = {}
    for names in fused_groups(root, layers):
        dtype = shared_statistic_type(DTYPES[layers[names[0]].data_type])
        assert dtype is not None  # fused_groups checked it
        weights = [linear_weight(root.get_submodule(name)).detach() for name in names]
        shared = dtype.group_statistic(weights)
        stats.update(dict.fromkeys(names, shared))
    if stats:
        logger.debug("%d layers share a per-tensor statistic with their fused siblings", len(stats))
    return stats


def _shares_statistic(schemes: list[Scheme]) -> bool:
    data_types = {scheme.data_type for scheme in schemes}
    if len(data_types) != 1:
        return False
    return shared_statistic_type(DTYPES[data_types.pop()]) is not None


def _cross_attention(root: nn.Module, parent: str) -> bool:
    module = root.get_submodule(parent) if parent else root
    return bool(getattr(module, "is_cross_attention", False))
