"""The calibration activations that flow between decoder blocks, kept in two buffers.

Tuning a block needs what it receives (the quantized predecessors' outputs with
``enable_quanted_input``, Intel's default; else the full-precision ones) and its target (the
full-precision block's output on full-precision inputs). Each block's outputs are written over
its inputs, batch by batch, so a whole run holds two activation tensors of (nsamples, seq,
hidden) and never more: the full-precision path and the tuned path. (A walker that keeps every
input and output alive holds four, and a ``torch.cat`` of batch outputs a fifth for a while.)

The buffers are stored in :func:`cache_dtype`; each batch is cast to the float32 the tuned copy
of a block computes in as it is used. The reference forwards that fill them run under
:func:`reference_autocast`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoround.modeling.capture import block_output

#: What the tuned copy of a block computes in (its matrix products under bf16 autocast where
#: ``SignRoundSettings.amp`` allows).
WORK_DTYPE = torch.float32


def cache_dtype(model_dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype the activations are cached in while tuning on ``device``.

    On an accelerator, the model's own dtype when it is 16-bit (as Intel caches them): GPU memory
    is what runs out, and a bf16 model's activations carry no more than bf16 precision anyway.
    On the CPU, float32: host memory is larger, float32 is the fast path on AVX2-only CPUs, and
    CPU results stay what they were before this cache existed (docs/checkpoint_hashes.json).
    """
    if torch.device(device).type == "cpu" or model_dtype.itemsize > 2:
        return WORK_DTYPE
    return model_dtype


def reference_autocast(amp_dtype: torch.dtype | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of the reference forwards (targets, next inputs): the tuning forward's
    on accelerators, none (float32) on the CPU.

    On CUDA, float32 attention over grouped key/value heads (Llama 3, Qwen, SmolLM2) has no fused
    kernel: SDPA falls back to the math kernel, which materializes the attention matrix (2.4 GiB
    for SmolLM2 at 8 x 2048 tokens, 8.6 GiB for a 1B Llama; seen as the peak of a run on an
    H100, 2026-12-06). Under bf16 autocast flash attention serves them, and the activations are
    cached in bf16 there anyway. On the CPU, float32 keeps results what they were
    (docs/checkpoint_hashes.json) and its attention kernel materializes nothing.
    """
    return None if torch.device(device).type == "cpu" else amp_dtype


@dataclass
class BlockActivations:
    """The two activation paths between blocks, on ``store`` (a device), in ``fp.dtype``.

    ``fp``: what the next block receives from full-precision predecessors; after
    :meth:`advance_fp` on a block, that block's full-precision outputs (its tuning target).
    ``tuned``: what the block being tuned receives.
    """

    fp: torch.Tensor
    tuned: torch.Tensor
    quanted_input: bool
    autocast: torch.dtype | None = None

    @classmethod
    def start(
        cls,
        hidden: torch.Tensor,
        quanted_input: bool,
        dtype: torch.dtype,
        store: torch.device,
        autocast: torch.dtype | None = None,
    ) -> BlockActivations:
        """Activations starting from the first block's inputs ``hidden`` (nsamples, seq, hidden).

        ``hidden`` is taken over (written in place) when it already has ``dtype`` and lies on
        ``store``. ``quanted_input``: the tuned path carries the quantized blocks' outputs forward
        (``enable_quanted_input``); otherwise each block is tuned on the full-precision inputs.
        ``autocast``: the reference forwards' autocast dtype (:func:`reference_autocast`).
        """
        fp = hidden.to(store, dtype)
        if store.type == "cpu" and torch.cuda.is_available():
            fp = fp.pin_memory()  # batches then copy to the GPU while it computes
        return cls(fp, torch.empty_like(fp).copy_(fp), quanted_input, autocast)

    def advance_fp(self, block: nn.Module, kwargs: dict[str, Any], batch_size: int) -> None:
        """Run the full-precision ``block``: ``fp`` becomes its outputs (the targets). Without
        ``quanted_input`` the tuned path first takes ``fp``'s current values (the block's inputs)."""
        if not self.quanted_input:
            self.tuned.copy_(self.fp)
        run_in_place(block, self.fp, kwargs, batch_size, self.autocast)

    def advance_tuned(self, block: nn.Module, kwargs: dict[str, Any], batch_size: int) -> None:
        """Run the quantized ``block`` on the tuned path: it becomes the next block's inputs.
        Without ``quanted_input`` the next block is tuned on ``fp`` and nothing runs."""
        if self.quanted_input:
            run_in_place(block, self.tuned, kwargs, batch_size, self.autocast)

    @torch.no_grad()
    def observe_tuned(self, block: nn.Module, kwargs: dict[str, Any], batch_size: int) -> None:
        """Run ``block`` on the tuned path, batch by batch, keeping nothing (forward hooks
        observe it: the calibrated activation ranges, :mod:`autoround.algorithms.act_calibration`)."""
        device = next(block.parameters()).device
        for start in range(0, len(self.tuned), batch_size):
            rows = self.tuned[start : start + batch_size]
            _forward(block, rows.to(device, WORK_DTYPE), kwargs, self.autocast)


@torch.no_grad()
def run_in_place(
    block: nn.Module,
    buffer: torch.Tensor,
    kwargs: dict[str, Any],
    batch_size: int,
    autocast: torch.dtype | None = None,
) -> None:
    """Replace each batch of ``buffer`` by ``block``'s output on it, computed where the block lives."""
    device = next(block.parameters()).device
    for start in range(0, len(buffer), batch_size):
        rows = buffer[start : start + batch_size]
        rows.copy_(_forward(block, rows.to(device, WORK_DTYPE), kwargs, autocast))


@torch.no_grad()
def outputs(
    block: nn.Module,
    inputs: torch.Tensor,
    kwargs: dict[str, Any],
    batch_size: int,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """``block``'s outputs on ``inputs`` (a few rows), in the work dtype where the block lives."""
    device = next(block.parameters()).device
    return torch.cat(
        [
            _forward(block, inputs[i : i + batch_size].to(device, WORK_DTYPE), kwargs, autocast)
            for i in range(0, len(inputs), batch_size)
        ]
    )


def _forward(
    block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any], autocast: torch.dtype | None
) -> torch.Tensor:
    with torch.autocast(hidden.device.type, dtype=autocast or WORK_DTYPE, enabled=autocast is not None):
        return block_output(block, hidden, kwargs).to(WORK_DTYPE)
