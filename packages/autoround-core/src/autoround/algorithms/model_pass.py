"""One forward pass of a model over calibration token ids, for statistics that forward hooks
collect meanwhile (the importance matrix of :mod:`autoround.algorithms.imatrix`, the calibrated
activation ranges of :mod:`autoround.algorithms.act_calibration`): the loop both share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm


class _Stop(Exception):
    """Raised to skip the output head when no observed layer lies there."""


@torch.no_grad()
def run_over_ids(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer_names: Iterable[str],
    *,
    desc: str,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> None:
    """Run ``model`` on token ids (nsamples, seqlen), ``batch_size`` rows at a time, on
    ``device`` (None: where its parameters are), under autocast to ``autocast_dtype`` where given.
    The output head (``get_output_embeddings``) is skipped unless one of ``layer_names`` is it:
    the caller's hooks on those layers see every batch.

    Raises:
        ValueError: ``input_ids`` is not 2-D.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (nsamples, seqlen), got shape {tuple(input_ids.shape)}")
    names = list(layer_names)
    handles = []
    get_head = getattr(model, "get_output_embeddings", None)  # a transformers model's method
    head = get_head() if get_head is not None else None
    if head is not None and not any(model.get_submodule(n) is head for n in names):

        def stop(_module: nn.Module, _args: tuple[Any, ...]) -> None:
            raise _Stop

        handles.append(head.register_forward_pre_hook(stop))
    if device is None:
        device = next(model.parameters()).device
    autocast = torch.autocast(
        torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None
    )
    try:
        with autocast:
            for batch in tqdm(input_ids.split(batch_size), desc=desc, unit="batch", disable=not progress):
                with contextlib.suppress(_Stop):
                    model(input_ids=batch.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
