"""Quantized models whose activations quantize with a calibrated range (``FP8_STATIC``, NVFP4
W4A4), built for the format tests without the calibration pipeline: RTN weights of the scheme's
weight-only form (the same weights: RTN does not look at activations), then every quantized
layer given the calibrated scheme and an input range (``LayerQuant.input_absmax``) -- measured
by plain forward pre-hooks on a prompt, or given (Intel's ``act_max``) -- and the in-memory
activation hooks with those ranges."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from autoround import quantize
from autoround.layer_plan import LayerDecision, LayerPlan
from autoround.nn.act_hooks import attach_act_quant
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS, parse_scheme

#: The prompt whose layer inputs give the ranges when none are given.
CALIBRATION_IDS = [1, 17, 33, 5, 90, 64, 12, 3, 77, 41, 8, 100, 2, 55, 19, 23]


def input_ranges(
    model: nn.Module, names: list[str], ids: list[int] = CALIBRATION_IDS
) -> dict[str, torch.Tensor]:
    """Each layer's largest ``|input|`` (0-dim float32) over one forward of ``ids``."""
    ranges: dict[str, torch.Tensor] = {}

    def observe(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            seen = args[0].detach().abs().amax().float()
            ranges[name] = torch.maximum(ranges[name], seen) if name in ranges else seen

        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(observe(name)) for name in names]
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def calibrated(
    model: nn.Module, preset: str, ranges: dict[str, torch.Tensor] | None = None, **overrides
) -> QuantizedModel:
    """``model`` quantized with ``preset`` (a calibrated-activation scheme) as described above."""
    scheme = parse_scheme(preset, **overrides)
    qm = quantize(model, scheme.replace(act_bits=UNQUANTIZED_BITS), progress=False)
    if ranges is None:
        ranges = input_ranges(qm.model, list(qm.layers))
    layers = {
        name: dataclasses.replace(quant, scheme=scheme, input_absmax=ranges[name].reshape(()).float())
        for name, quant in qm.layers.items()
    }
    decisions = {
        name: LayerDecision(None if d.scheme is None else scheme, d.reason)
        for name, d in qm.plan.layers.items()
    }
    plan = LayerPlan(decisions, qm.plan.block_names)
    attach_act_quant(qm.model, plan.quantized(), {name: q.input_absmax for name, q in layers.items()})
    return QuantizedModel(qm.model, scheme, plan, layers, dict(qm.settings), qm.tokenizer)
