"""What each decoder block receives in llm-compressor's sequential pipeline, gathered per block.

The pipeline runs one subgraph (one decoder block) at a time over every calibration batch; a
forward pre-hook on the block records the hidden states of each batch and, once, the block's other
arguments (attention mask, rotary ``position_embeddings``, ...). Samples must share one length so
that they stack into one (nsamples, seq, hidden) tensor, as autoround's tuner expects; the other
arguments must be the same for every sample (true of causal LMs without padding), so that a batch
dimension of 1 broadcasts over any tuning batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: Arguments a block run on its own must not receive: it must not read or write a KV cache.
_CACHE_KEYS = ("past_key_values", "past_key_value", "layer_past")


@dataclass
class RecordedInputs:
    """The batches of hidden states one block received, and its shared keyword arguments."""

    hidden: list[torch.Tensor] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def add(self, block: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Record one call of the block (``args``/``kwargs`` as a forward pre-hook sees them)."""
        if len(args) > 1:
            raise NotImplementedError(
                f"{block} receives {len(args) - 1} extra positional argument(s); only keyword arguments "
                f"besides the hidden states are supported"
            )
        kwargs = dict(kwargs)
        states = args[0] if args else kwargs.pop("hidden_states")
        if self.hidden and states.shape[1:] != self.hidden[0].shape[1:]:
            raise ValueError(
                f"{block}: calibration samples of different lengths ({tuple(self.hidden[0].shape)} and "
                f"{tuple(states.shape)}); SignRoundModifier needs samples of one length: tokenize with "
                f"truncation to max_seq_length and drop shorter samples (or pad them all)"
            )
        self.hidden.append(states.detach())
        if not self.kwargs:
            self.kwargs = _shared(block, kwargs, states.shape[0])

    def stacked(self) -> torch.Tensor:
        """All recorded hidden states, (nsamples, seq, hidden)."""
        return torch.cat(self.hidden, dim=0)


def _shared(block: str, kwargs: dict[str, Any], batch: int) -> dict[str, Any]:
    """The keyword arguments without KV-cache ones, reduced to one sample where batched."""
    kept = {k: v for k, v in kwargs.items() if k not in _CACHE_KEYS}
    if "use_cache" in kept:
        kept["use_cache"] = False
    return {k: _first_sample(block, k, v, batch) for k, v in kept.items()}


def _first_sample(block: str, key: str, value: Any, batch: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_first_sample(block, key, v, batch) for v in value)
    if not isinstance(value, torch.Tensor) or batch == 1 or value.dim() == 0 or value.shape[0] != batch:
        return value
    if not all(torch.equal(value[0], row) for row in value[1:]):
        raise ValueError(
            f"{block}: argument {key!r} differs between the samples of one batch (padding?); "
            f"SignRoundModifier needs unpadded samples of one length, or batch_size=1 in oneshot"
        )
    return value[:1]
