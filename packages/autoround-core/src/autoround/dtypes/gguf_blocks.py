"""The llama.cpp block types, as data: :data:`BLOCK_TYPES` by ggml's name (``"q4_k"``).

A scheme names a block type by its data type (``"gguf"``: the 32-weight blocks; ``"gguf_k"``:
the K-quants' 256-weight super-blocks), bits, symmetry and group size (the weights sharing one
scale: 32 for the 32-weight types, 16 or 32 for the sub-blocks of a K-quant), as Intel
auto-round's GGUF presets do (``GGUF:Q4_K_M`` is 4-bit, asymmetric, group 32, double-quantized).

Every block type quantizes grouped weights (one row per group) into
:class:`~autoround.dtypes.gguf_legacy.BlockCodes` (round-to-nearest as ``llama-quantize`` does
without an importance matrix, or its importance-weighted search), dequantizes codes with their
fields, and finds the nearest codes for given fields (:func:`encode`: how a writer recovers the
stored codes of a quantize-dequantized weight).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from autoround.dtypes import gguf_kquants as k
from autoround.dtypes import gguf_legacy as legacy
from autoround.dtypes.gguf_legacy import BlockCodes

Rtn = Callable[[torch.Tensor], BlockCodes]
Weighted = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], BlockCodes]


@dataclass(frozen=True)
class BlockType:
    """One ggml block type.

    Attributes:
        name: ggml's name, lower case (``"q4_k"``).
        data_type: the scheme ``data_type`` naming it (``"gguf"`` or ``"gguf_k"``).
        bits, sym, group: the scheme fields naming it (``group``: weights per scale).
        block: weights per ggml block (32, or 256 for a K-quant super-block): a tensor's row
            length must be a multiple of it.
        offset: subtracted from a stored code (``q4_0``: 8; ``q6_k``: 32; asymmetric types: 0).
        rtn, weighted: the quantizers (see the module docstring).
    """

    name: str
    data_type: str
    bits: int
    sym: bool
    group: int
    block: int
    offset: int
    rtn: Rtn
    weighted: Weighted

    @property
    def super_block(self) -> bool:
        """Whether groups share a super-block's fp16 ``d`` (the K-quants)."""
        return self.block > self.group

    def describe(self) -> str:
        """``q4_k (bits 4, asym, group 32)``: how messages list it."""
        return f"{self.name} (bits {self.bits}, {'sym' if self.sym else 'asym'}, group {self.group})"


def _entry(name: str, data_type: str, bits: int, sym: bool, group: int, block: int, offset: int) -> BlockType:
    module = k if data_type == "gguf_k" else legacy
    return BlockType(
        name,
        data_type,
        bits,
        sym,
        group,
        block,
        offset,
        getattr(module, f"{name}_rtn"),
        getattr(module, f"{name}_weighted"),
    )


#: ggml name -> block type. F16 / BF16 / F32 are not quantized types and are not listed.
BLOCK_TYPES: dict[str, BlockType] = {
    entry.name: entry
    for entry in (
        _entry("q4_0", "gguf", 4, True, 32, 32, 8),
        _entry("q4_1", "gguf", 4, False, 32, 32, 0),
        _entry("q5_0", "gguf", 5, True, 32, 32, 16),
        _entry("q5_1", "gguf", 5, False, 32, 32, 0),
        _entry("q8_0", "gguf", 8, True, 32, 32, 128),
        _entry("q2_k", "gguf_k", 2, False, 16, 256, 0),
        _entry("q3_k", "gguf_k", 3, True, 16, 256, 4),
        _entry("q4_k", "gguf_k", 4, False, 32, 256, 0),
        _entry("q5_k", "gguf_k", 5, False, 32, 256, 0),
        _entry("q6_k", "gguf_k", 6, True, 16, 256, 32),
    )
}


def block_type(data_type: str, bits: int, sym: bool, group: int) -> BlockType | None:
    """The block type a scheme's fields name, or None."""
    for entry in BLOCK_TYPES.values():
        if (entry.data_type, entry.bits, entry.sym, entry.group) == (data_type, bits, sym, group):
            return entry
    return None


def dequantize(
    super_block: bool, levels: torch.Tensor, floats: torch.Tensor, ints: torch.Tensor
) -> torch.Tensor:
    """Values of grouped signed levels (stored code minus the type's offset), float32, in ggml's
    op order (what its and the ``gguf`` package's dequantizers compute): ``d * level + m`` for
    the 32-weight types, ``(d * sc) * level - dmin * m`` for the K-quants (``super_block``)."""
    d = floats[:, :1].float()
    asym = floats.shape[1] > 1
    if not super_block:
        return d * levels + floats[:, 1:2].float() if asym else d * levels
    values = (d * ints[:, :1].float()) * levels
    return values - floats[:, 1:2].float() * ints[:, 1:2].float() if asym else values


def encode(
    block: BlockType,
    values: torch.Tensor,
    floats: torch.Tensor,
    ints: torch.Tensor,
    v: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The nearest signed levels (float) of grouped ``values`` under the given fields, after
    adding the rounding offset ``v``, within the type's code range: exactly the levels of values
    :func:`dequantize` produced."""
    d = floats[:, :1].float()
    asym = floats.shape[1] > 1
    if block.super_block:
        step = d * ints[:, :1].float()
        shift = floats[:, 1:2].float() * ints[:, 1:2].float() if asym else 0.0
    else:
        step = d
        shift = -floats[:, 1:2].float() if asym else 0.0
    live = step != 0
    levels = torch.round((values.float() + shift) / torch.where(live, step, 1.0) + v)
    levels = levels.clamp(-block.offset, 2**block.bits - 1 - block.offset)
    return torch.where(live, levels, 0.0)
