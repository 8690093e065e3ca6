"""What each decoder block receives in llm-compressor's sequential pipeline, gathered per block.

The pipeline runs one subgraph (one decoder block) at a time over every calibration batch; a
forward pre-hook on the block records the hidden states of each batch and, once, the block's other
arguments (attention mask, rotary ``position_embeddings``, ...). Samples must share one length so
that they stack into one (nsamples, seq, hidden) tensor, as autoround's tuner expects; the other
arguments must be the same for every sample (true of causal LMs without padding), so that a batch
dimension of 1 broadcasts over any tuning batch.

The pipeline calibrates under eager attention, which always materialises the causal mask; the
same model outside it, attending with SDPA, gets ``None`` and SDPA's ``is_causal`` path (what
autoround's ``quantize`` records). Equal in value, the two take different kernels whose last bits
differ on some CPUs; so for a model that attends with SDPA an exactly causal mask is recorded as
``None``, as transformers itself decides for an unpadded batch.
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
    #: The model attends with SDPA (outside the pipeline), which reads a mask of None as causal.
    sdpa: bool = False

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
            if self.sdpa and _is_causal(self.kwargs.get("attention_mask")):
                self.kwargs["attention_mask"] = None

    def stacked(self) -> torch.Tensor:
        """All recorded hidden states, (nsamples, seq, hidden)."""
        return torch.cat(self.hidden, dim=0)


def _shared(block: str, kwargs: dict[str, Any], batch: int) -> dict[str, Any]:
    """The keyword arguments without KV-cache ones, reduced to one sample where batched."""
    kept = {k: v for k, v in kwargs.items() if k not in _CACHE_KEYS}
    if "use_cache" in kept:
        kept["use_cache"] = False
    return {k: _first_sample(block, k, v, batch) for k, v in kept.items()}


def _is_causal(mask: Any) -> bool:
    """Whether ``mask`` (batch 1, 4-D, boolean or additive) lets each query see exactly itself and
    the keys before it."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[0] != 1:
        return False
    if mask.shape[-1] != mask.shape[-2]:
        return False
    allowed = mask if mask.dtype == torch.bool else mask == 0
    causal = torch.ones(mask.shape[-2:], dtype=torch.bool, device=mask.device).tril()
    if not torch.equal(allowed, causal.expand_as(allowed)):
        return False
    return mask.dtype == torch.bool or bool((mask[~allowed] <= torch.finfo(mask.dtype).min / 2).all())


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
