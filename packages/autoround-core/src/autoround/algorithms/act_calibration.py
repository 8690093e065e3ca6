"""Calibrated activation ranges: the largest ``|input|`` each layer sees on the calibration set.

A scheme whose activations quantize with a calibrated range (static FP8 per tensor, NVFP4's
activation global scale: the kinds with ``ActKindEntry.calibrated``) needs, per layer, the largest
magnitude of its input over the calibration samples: Intel 0.16.1's ``act_max``
(``AlgorithmComposer._register_act_max_hooks``, forward hooks on the layers), per tensor for
these kinds (``act_group_size=0`` reshapes the input to one row; NVFP4's per-16 maxima are
reduced to their maximum). It is kept as :attr:`~autoround.layer_quant.LayerQuant.input_absmax`
(0-dim float32, times SignRound's tuned factor where that is tuned), which the in-memory hooks
and the formats read.

Which inputs, as Intel: in each decoder block, before its weights are quantized, on what the
block receives. Round-to-nearest (plain or optimized) feeds full-precision outputs forward, so
the ranges are those of the unquantized model on the calibration set: :func:`calibrate_model`
runs it once with hooks, before any weight changes (the runner does, for every layer-wise
algorithm). SignRound with ``enable_quanted_input`` observes the unquantized block on the
quantized predecessors' outputs (:mod:`autoround.algorithms.signround_blocks`), else on the
full-precision inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from autoround.algorithms.model_pass import run_over_ids
from autoround.dtypes.activations import calibrated_entry
from autoround.layer_quant import LayerQuant
from autoround.schemes import Scheme


def calibrated_layers(layers: Mapping[str, Scheme]) -> list[str]:
    """The names among ``layers`` whose activations quantize with a calibrated range.

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
    """
    return [name for name, scheme in layers.items() if calibrated_entry(scheme) is not None]


@contextlib.contextmanager
def collect_input_absmax(module: nn.Module, layer_names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While the context is open, keep the largest ``|input|`` of each named submodule of
    ``module`` (its first positional input, over every forward). Yields the dict it fills:
    name -> 0-dim float32 on the layer's device (a layer that saw no input has no entry)."""
    ranges: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], _output: Any) -> None:
            x = args[0]
            if not isinstance(x, torch.Tensor) or x.numel() == 0:  # Intel skips empty inputs too
                return
            # the maximum of magnitudes is exact in any dtype, so float32 keeps it as it was
            seen = x.detach().abs().amax().to(torch.float32)
            ranges[name] = seen if name not in ranges else torch.maximum(ranges[name], seen)

        return hook

    handles = [module.get_submodule(n).register_forward_hook(make_hook(n)) for n in layer_names]
    try:
        yield ranges
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def calibrate_model(
    model: nn.Module,
    layer_names: Iterable[str],
    input_ids: torch.Tensor,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Each named layer's largest ``|input|`` (0-dim float32, on the CPU) when the unquantized
    ``model`` runs on token ids (nsamples, seqlen), ``batch_size`` rows at a time, where it lives
    and in its own dtype; the output head is skipped unless one of the layers is it.

    Raises:
        ValueError: ``input_ids`` is not 2-D, or a named layer saw no input (naming it).
    """
    names = list(layer_names)
    with collect_input_absmax(model, names) as ranges:
        run_over_ids(model, input_ids, names, desc="act ranges", batch_size=batch_size, progress=progress)
    missing = [n for n in names if n not in ranges]
    if missing:
        raise ValueError(
            f"no calibration input reached {missing}: their activation ranges cannot be calibrated"
        )
    return {name: value.cpu() for name, value in ranges.items()}


def with_input_absmax(
    layers: Mapping[str, LayerQuant], ranges: Mapping[str, torch.Tensor]
) -> dict[str, LayerQuant]:
    """``layers`` with the calibrated range of each layer named in ``ranges`` (0-dim float32, on
    the CPU where layers' parameters are kept)."""
    return {
        name: quant
        if name not in ranges
        else dataclasses.replace(
            quant, input_absmax=ranges[name].detach().to("cpu", torch.float32).reshape(())
        )
        for name, quant in layers.items()
    }


def layer_ranges(layers: Mapping[str, LayerQuant]) -> dict[str, torch.Tensor]:
    """The calibrated ranges of ``layers`` (name -> 0-dim), those that have one."""
    return {name: quant.input_absmax for name, quant in layers.items() if quant.input_absmax is not None}


def require_ranges(layers: Mapping[str, LayerQuant]) -> None:
    """Check that every layer whose activations are calibrated has its range.

    Raises:
        ValueError: naming the first layer without one.
    """
    missing = [
        n
        for n in calibrated_layers({n: q.scheme for n, q in layers.items()})
        if layers[n].input_absmax is None
    ]
    if missing:
        raise ValueError(
            f"layer {missing[0]} (and {len(missing) - 1} more) quantizes activations with a calibrated "
            f"range (LayerQuant.input_absmax), but none was calibrated"
        )
