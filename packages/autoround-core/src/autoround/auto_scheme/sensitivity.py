"""The ``"block"`` measure: each unit's decoder-block output error, each hidden dimension weighted
by how much the model's loss cares about it there (the default, cheaper measure is
:mod:`autoround.auto_scheme.layer_error`).

First the loss gradients at every block's output are summed squared over the calibration tokens
(:mod:`autoround.auto_scheme.fisher`: a diagonal Fisher of the residual stream, one vector per
block). Then the first block's inputs are captured; block by block, a float32 copy of the block
gives its full-precision output (the next block's input), and for every unit in it and every
option the unit's layers are quantized (round-to-nearest), the block is run again and the
Fisher-weighted squared distance to the full-precision output is summed, the weights put back.
A unit's error is that sum over its blocks, divided by the number of calibration tokens: about
twice the loss the unit's quantization adds (the second-order term). Memory: the model, one
block's float32 copy and two activation buffers of (nsamples, seqlen, hidden), plus one
batch's full forward and backward for the gradients. docs/auto_scheme.md says why this measure.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.algorithms.block_activations import WORK_DTYPE, outputs
from autoround.algorithms.block_placement import blocks_on_host
from autoround.auto_scheme.fisher import block_fisher
from autoround.auto_scheme.space import SearchSpace
from autoround.dtypes.gguf_blocks import BLOCK_TYPES, block_type
from autoround.formats.gguf_recipes import fallback
from autoround.layer_quant import quantize_weight
from autoround.modeling.blocks import linear_weight
from autoround.modeling.capture import block_output, capture_block_inputs, cast_kwargs
from autoround.schemes import Scheme

logger = logging.getLogger(__name__)

#: (unit index, layer names relative to the block) for the units with layers in one block.
Parts = list[tuple[int, list[str]]]


@torch.no_grad()
def measure(
    model: nn.Module,
    space: SearchSpace,
    input_ids: torch.Tensor,
    device: torch.device | str | None = None,
    progress: bool = True,
    fisher: bool = True,
) -> list[list[float]]:
    """``errors[unit][option]``: the mean over calibration tokens of the squared distance between
    the block's output with the unit at that option and its full-precision output, each hidden
    dimension weighted by the block's loss-gradient Fisher (``fisher=False``: unweighted)."""
    if len(space.plan.block_names) != 1:
        raise NotImplementedError(
            f"AutoScheme over several block lists is not built: {space.plan.block_names}"
        )
    prefix = space.plan.block_names[0]
    blocks = cast(nn.ModuleList, model.get_submodule(prefix))
    device = torch.device(device or "cpu")
    parts = parts_by_block(space, prefix)
    errors = [[0.0] * len(space.auto.schemes) for _ in space.units]
    batch = space.auto.search_batch_size
    weights = block_fisher(model, list(blocks), input_ids, progress) if fisher else None
    with blocks_on_host(blocks, device):
        hidden, kwargs = first_block_inputs(model, blocks[0], input_ids, device, progress)
        for index in tqdm(range(len(blocks)), desc="AutoScheme", unit="block", disable=not progress):
            work = copy.deepcopy(blocks[index]).to(device, WORK_DTYPE)
            target = outputs(work, hidden, kwargs, batch)
            weight = weights[index].to(device) if weights is not None else None
            for unit, names in parts.get(index, []):
                row = block_errors(work, names, space.auto.schemes, (hidden, target), kwargs, batch, weight)
                errors[unit] = [a + b for a, b in zip(errors[unit], row, strict=True)]
            hidden = target
            del work
    tokens = input_ids.numel()
    return [[e / tokens for e in row] for row in errors]


def first_block_inputs(
    model: nn.Module, first_block: nn.Module, input_ids: torch.Tensor, device: torch.device, progress: bool
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The first block's inputs on ``input_ids`` and its other arguments, float32 on ``device``."""
    model_device = next(model.parameters()).device
    captured = capture_block_inputs(model, first_block, input_ids, model_device, progress, WORK_DTYPE, device)
    return captured.hidden, cast_kwargs(captured.kwargs, WORK_DTYPE, device)


def parts_by_block(space: SearchSpace, prefix: str) -> dict[int, Parts]:
    """Block index -> the units with layers in that block, their names relative to it."""
    found: dict[int, dict[int, list[str]]] = {}
    for unit_index, unit in enumerate(space.units):
        for name in unit.layers:
            index, _, local = name[len(prefix) + 1 :].partition(".")
            found.setdefault(int(index), {}).setdefault(unit_index, []).append(local)
    return {index: list(units.items()) for index, units in found.items()}


def block_errors(
    block: nn.Module,
    names: Sequence[str],
    schemes: Sequence[Scheme],
    data: tuple[torch.Tensor, torch.Tensor],
    kwargs: dict[str, Any],
    batch: int,
    weight: torch.Tensor | None = None,
) -> list[float]:
    """The summed (weighted) squared output error of ``block`` with layers ``names`` at each
    scheme, on ``data``: the block's inputs and full-precision outputs."""
    layers = {n: linear_weight(block.get_submodule(n)) for n in names}
    originals = {n: w.detach().clone() for n, w in layers.items()}
    errors = []
    try:
        for scheme in schemes:
            if not scheme.is_quantized:
                errors.append(0.0)
                continue
            for n, tensor in layers.items():
                written = as_written(scheme, tensor.shape[1])
                tensor.copy_(quantize_weight(originals[n], written)[0] if written else originals[n])
            errors.append(output_error(block, *data, kwargs, batch, weight))
    finally:
        for n, tensor in layers.items():
            tensor.copy_(originals[n])
    return errors


def output_error(
    block: nn.Module,
    hidden: torch.Tensor,
    target: torch.Tensor,
    kwargs: dict[str, Any],
    batch: int,
    weight: torch.Tensor | None = None,
) -> float:
    """Sum over all samples of the squared distance between ``block``'s output and ``target``,
    each hidden dimension weighted by ``weight`` (hidden,) when given."""
    total = 0.0
    for start in range(0, len(hidden), batch):
        out = block_output(block, hidden[start : start + batch], kwargs)
        squared = (out.to(WORK_DTYPE) - target[start : start + batch]).double().pow(2)
        total += (squared * weight.double() if weight is not None else squared).sum().item()
    return total


def as_written(scheme: Scheme, in_features: int) -> Scheme | None:
    """The scheme a layer of ``in_features`` inputs is quantized with: a GGUF block type whose
    block the rows do not fill takes llama.cpp's fallback, as the GGUF format's plan does
    (None: kept in 16 bits)."""
    entry = block_type(scheme.data_type, scheme.bits, scheme.sym, scheme.group_size)
    if entry is None or in_features % entry.block == 0:
        return scheme
    kept = BLOCK_TYPES.get(fallback(entry.name, in_features))
    if kept is None:
        return None
    return Scheme(bits=kept.bits, group_size=kept.group, sym=kept.sym, data_type=kept.data_type)
