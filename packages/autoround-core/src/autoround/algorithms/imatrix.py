"""Importance matrix: the mean squared input activation of every input channel of chosen layers.

Intel auto-round's optimized RTN weights its scale search by this ("imatrix", after llama.cpp).
Intel collects it with forward hooks while running each decoder block on the full-precision
inputs of the calibration set (the previous blocks still unquantized, since RTN does not feed
quantized outputs forward), summing ``x**2`` over all tokens in float32 and dividing by the
number of samples. Running the unquantized model once with the same hooks gives the same
statistics; that is what :func:`collect_imatrix` does, before any layer is quantized.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from autoround.algorithms.model_pass import run_over_ids

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def collect_input_squares(module: nn.Module, layer_names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While the context is open, sum ``x**2`` over all tokens of each named submodule's input.

    Yields the dict it fills: layer name -> (in_features,) float32 on the layer's device.
    """
    sums: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple[Any, ...], _output: Any) -> None:
            x = args[0]
            squared = x.detach().reshape(-1, x.shape[-1]).to(torch.float32).pow(2).sum(dim=0)
            if name in sums:
                sums[name] += squared
            else:
                sums[name] = squared

        return hook

    handles = [module.get_submodule(n).register_forward_hook(make_hook(n)) for n in layer_names]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect_imatrix(
    model: nn.Module,
    layer_names: Iterable[str],
    input_ids: torch.Tensor,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Per-layer importance (in_features,) float32 on the CPU, from token ids (nsamples, seqlen).

    Each value is ``sum over tokens of x**2 / nsamples`` for that input channel (Intel divides by
    the number of samples, not tokens; the search only compares losses, so the scale is
    immaterial). The model runs in its own dtype, ``batch_size`` rows at a time; the output
    head (``get_output_embeddings``) is skipped unless one of ``layer_names`` is it.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward under autocast to that dtype;
    the squares are still summed in float32.
    """
    names = list(layer_names)
    with collect_input_squares(model, names) as sums:
        run_over_ids(
            model,
            input_ids,
            names,
            desc="imatrix",
            batch_size=batch_size,
            device=device,
            progress=progress,
            autocast_dtype=autocast_dtype,
        )
    missing = [n for n in names if n not in sums]
    if missing:
        logger.warning(
            "no activations reached %d layers (e.g. %s): they get no imatrix", len(missing), missing[0]
        )
    count = input_ids.shape[0]
    return {name: (total / count).cpu() for name, total in sums.items()}
