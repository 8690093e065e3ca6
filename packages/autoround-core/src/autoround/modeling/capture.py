"""Capturing what the first decoder block receives, so blocks can be run on their own.

The model runs up to the first block, one calibration sample at a time; a forward pre-hook on
that block records its hidden states and keyword arguments (attention mask, position ids, the
rotary ``position_embeddings`` tuple, ...) and stops the forward. Every sample has the same
length, so the keyword arguments of the first sample serve all of them; batch dimensions of size
1 broadcast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm


class _Stop(Exception):
    """Raised by the hook once the first block's inputs are recorded."""


@dataclass
class BlockInputs:
    """Hidden states of every sample (nsamples, seq, hidden) and the shared keyword arguments."""

    hidden: torch.Tensor
    kwargs: dict[str, Any]


def _strip_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A block run on its own must not read or write a KV cache.
    cache_keys = ("past_key_values", "past_key_value", "layer_past")
    kept = {k: v for k, v in kwargs.items() if k not in cache_keys}
    if "use_cache" in kept:
        kept["use_cache"] = False
    return kept


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    first_block: nn.Module,
    input_ids: torch.Tensor,
    device: torch.device,
    progress: bool = True,
    dtype: torch.dtype | None = None,
    store: torch.device | None = None,
) -> BlockInputs:
    """Run ``model`` (on ``device``) on each row of ``input_ids`` until ``first_block`` and record
    its inputs, written straight into one tensor of ``dtype`` on ``store`` (default: as the
    model gives them)."""
    hidden: list[torch.Tensor] = []  # one tensor for all samples, allocated on the first
    shared: dict[str, Any] = {}
    positional: list[int] = []  # indices of extra positional arguments (refused below)
    row_index = 0

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states = args[0] if args else kwargs.pop("hidden_states")
        if not hidden:
            shape = (len(input_ids), *states.shape[1:])
            hidden.append(torch.empty(shape, dtype=dtype or states.dtype, device=store or states.device))
        hidden[0][row_index].copy_(states[0])
        if not shared and not positional:
            shared.update(_strip_cache(kwargs))
            positional.extend(range(1, len(args)))
        raise _Stop

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for row in tqdm(input_ids, desc="capturing block inputs", unit="sample", disable=not progress):
            with contextlib.suppress(_Stop):
                model(input_ids=row.unsqueeze(0).to(device), use_cache=False)
            row_index += 1
    finally:
        handle.remove()
    if positional:
        raise NotImplementedError(
            f"{type(first_block).__name__} receives extra positional arguments; only keyword arguments "
            f"besides the hidden states are supported"
        )
    return BlockInputs(hidden[0], shared)


def block_output(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """Run one block; decoder layers return a tensor or a tuple whose first item is the output."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def cast_kwargs(kwargs: dict[str, Any], dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Floating tensors (also inside tuples, e.g. rotary cos/sin) to ``dtype``; all to ``device``."""

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        if isinstance(value, tuple):
            return tuple(cast(v) for v in value)
        return value

    return {k: cast(v) for k, v in kwargs.items()}
