"""Where a model's decoder blocks wait while SignRound tunes one of them.

Tuning on an accelerator needs one block there at a time (its float32 work copy), beside the
cached activations. A model the user loaded onto that accelerator would otherwise keep every
block there for the whole run: for a 1B model in bf16, 2 GiB of GPU memory that no iteration
uses. So, while tuning, blocks that sit on the tuning accelerator wait in host memory (a copy
costs well under a second per GiB), and all of them go back where they were at the end, also
when tuning fails. Blocks placed by accelerate (``_hf_hook``: offloaded or split over devices)
are left where accelerate put them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _device_of(block: nn.Module) -> torch.device | None:
    first = next(block.parameters(), None)
    return first.device if first is not None else None


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as the ``cuda:N`` it means (the current device), so devices compare equal."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def blocks_on_host(blocks: nn.ModuleList, device: torch.device) -> Iterator[None]:
    """While open, the ``blocks`` that live on the accelerator ``device`` wait on the CPU."""
    if device.type == "cpu":
        yield
        return
    device = _indexed(device)
    parked = [
        b for b in blocks if _device_of(b) == device and not any(hasattr(m, "_hf_hook") for m in b.modules())
    ]
    for block in parked:
        block.to("cpu")
    if parked:
        logger.info("%d decoder blocks wait on the CPU while each is tuned on %s", len(parked), device)
    try:
        yield
    finally:
        for block in parked:
            block.to(device)
