"""The default measure: each layer's output error in closed form, each output dimension weighted
by how much the model's loss cares about it there.

A layer ``y = W x`` quantized to ``W + dW`` moves its output by ``dW x``; summed over the
calibration tokens, weighted by the loss-gradient Fisher ``F`` of that output
(:mod:`autoround.auto_scheme.fisher`), that is ``sum_o F[o] * (dW H dW^T)[o, o]`` with ``H = sum_t
x_t x_t^T`` the Gram matrix of the layer's inputs. So one backward pass gives every layer's ``F``,
one full-precision forward per block gives its layers' ``H``, and each option then costs one
quantization and one matrix product per layer instead of a block forward. For a layer whose output
goes straight into the residual stream at the block's end (``down_proj``), ``F`` is the block
output's and the error equals the block-output measure's (:mod:`autoround.auto_scheme.sensitivity`)
exactly; for the others the loss's response after the layer is linearized through ``F``.
docs/auto_scheme.md says why this measure and what it costs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.algorithms.block_activations import WORK_DTYPE, outputs
from autoround.algorithms.block_placement import blocks_on_host
from autoround.auto_scheme.fisher import output_fisher
from autoround.auto_scheme.sensitivity import as_written, first_block_inputs, parts_by_block
from autoround.auto_scheme.space import SearchSpace
from autoround.layer_quant import quantize_weight
from autoround.modeling.blocks import linear_weight
from autoround.schemes import Scheme


@torch.no_grad()
def measure(
    model: nn.Module,
    space: SearchSpace,
    input_ids: torch.Tensor,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[list[float]]:
    """``errors[unit][option]``: the mean over calibration tokens of the Fisher-weighted squared
    output error of the unit's layers at that option, summed over its layers."""
    if len(space.plan.block_names) != 1:
        raise NotImplementedError(
            f"AutoScheme over several block lists is not built: {space.plan.block_names}"
        )
    prefix = space.plan.block_names[0]
    blocks = cast(nn.ModuleList, model.get_submodule(prefix))
    device = torch.device(device or "cpu")
    parts = parts_by_block(space, prefix)
    names = [name for unit in space.units for name in unit.layers]
    batch = space.auto.search_batch_size
    found = output_fisher(model, [model.get_submodule(n) for n in names], input_ids, progress=progress)
    fisher = dict(zip(names, found, strict=True))
    errors = [[0.0] * len(space.auto.schemes) for _ in space.units]
    with blocks_on_host(blocks, device):
        hidden, kwargs = first_block_inputs(model, blocks[0], input_ids, device, progress)
        for index in tqdm(range(len(blocks)), desc="AutoScheme", unit="block", disable=not progress):
            work = copy.deepcopy(blocks[index]).to(device, WORK_DTYPE)
            block_parts = parts.get(index, [])
            local = [n for _, unit_names in block_parts for n in unit_names]
            grams, hidden = input_grams(work, local, hidden, kwargs, batch)
            for unit, unit_names in block_parts:
                for name in unit_names:
                    weight = fisher[f"{prefix}.{index}.{name}"].to(device)
                    layer = linear_weight(work.get_submodule(name))
                    row = layer_errors(layer, grams.get(name), weight, space.auto.schemes)
                    errors[unit] = [a + b for a, b in zip(errors[unit], row, strict=True)]
            del work, grams
    tokens = input_ids.numel()
    return [[e / tokens for e in row] for row in errors]


def input_grams(
    block: nn.Module, names: Sequence[str], hidden: torch.Tensor, kwargs: dict[str, Any], batch: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``block`` on ``hidden``: the Gram matrix ``sum_t x_t x_t^T`` of each named layer's
    inputs (float32), and the block's outputs (the next block's inputs)."""
    grams: dict[str, torch.Tensor] = {}
    # q/k/v (and gate/up) read one tensor: its Gram matrix is computed once per forward
    last: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(name: str) -> Any:
        def gram(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if last and last[0][0] is x:
                product = last[0][1]
            else:
                flat = x.reshape(-1, x.shape[-1]).float()
                product = flat.T @ flat
                last[:] = [(x, product)]
            grams[name] = grams[name] + product if name in grams else product.clone()

        return gram

    handles = [block.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        result = outputs(block, hidden, kwargs, batch)
    finally:
        for handle in handles:
            handle.remove()
        last.clear()
    return grams, result


def layer_errors(
    weight: torch.Tensor, gram: torch.Tensor | None, fisher: torch.Tensor, schemes: Sequence[Scheme]
) -> list[float]:
    """``sum_o fisher[o] * (dW gram dW^T)[o, o]`` for each scheme, ``dW`` the change its
    quantization makes to ``weight`` (out, in): the Fisher-weighted squared output error summed
    over the tokens ``gram`` was taken on (0 for a layer that saw no token, or kept in 16 bits)."""
    if gram is None or fisher.numel() == 0:
        return [0.0] * len(schemes)
    original = weight.detach().float()
    errors = []
    for scheme in schemes:
        written = as_written(scheme, weight.shape[1]) if scheme.is_quantized else None
        if written is None:
            errors.append(0.0)
            continue
        change = quantize_weight(original, written)[0].float() - original
        per_output = ((change @ gram) * change).sum(1)
        errors.append(float((per_output.double() * fisher.double()).sum()))
    return errors
