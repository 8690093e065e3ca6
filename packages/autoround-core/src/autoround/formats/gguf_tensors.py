"""One tensor's bytes in a GGUF file: a quantized layer encoded from its quantize-dequantized weight
and its block fields, a tensor quantized at write time (llama.cpp's round-to-nearest), or a
float tensor.

A quantized layer's codes are not kept in memory: :func:`encode_layer` recovers them as the
nearest codes of the weight under the layer's block fields (exact, since the weight is what
those codes dequantize to) and checks that they dequantize back to the weight, refusing the
write otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from autoround.dtypes import to_groups
from autoround.dtypes.gguf_blocks import BLOCK_TYPES, BlockType, block_type, dequantize, encode
from autoround.errors import FormatError
from autoround.formats.gguf_pack import PACKERS
from autoround.layer_quant import LayerQuant

#: The GGUF data types (block types named by a scheme's fields).
GGUF_DATA_TYPES = ("gguf", "gguf_k")


def block_of(quant: LayerQuant) -> BlockType:
    """The block type a layer was quantized with.

    Raises:
        FormatError: its scheme names no GGUF block type.
    """
    scheme = quant.scheme
    found = block_type(scheme.data_type, scheme.bits, scheme.sym, scheme.group_size)
    if found is None:
        raise FormatError(
            f"{scheme.data_type} {scheme.bits}-bit group {scheme.group_size} is no GGUF block type; "
            f"types: {', '.join(entry.describe() for entry in BLOCK_TYPES.values())}"
        )
    return found


def pack(
    block: BlockType, levels: torch.Tensor, floats: torch.Tensor, ints: torch.Tensor, rows: int
) -> np.ndarray:
    """(rows, bytes per row) uint8 of grouped levels and their fields (one row per group)."""
    subs = block.block // block.group
    codes = (levels + block.offset).to(torch.uint8).reshape(-1, block.block).cpu().numpy()
    per_block_floats = floats.reshape(-1, subs, floats.shape[1])[:, 0].float().cpu().numpy()
    per_block_ints = ints.reshape(-1, subs, ints.shape[1]).to(torch.int32).cpu().numpy()
    if not block.super_block:
        per_block_ints = per_block_ints[:, 0]
    packed = PACKERS[block.name](codes, per_block_floats, per_block_ints)
    return packed.reshape(rows, -1)


def _encode_grouped(
    block: BlockType, weight: torch.Tensor, floats: torch.Tensor, ints: torch.Tensor, name: str
) -> np.ndarray:
    rows, cols = weight.shape
    if cols % block.block:
        raise FormatError(
            f"{name}: {cols} inputs are not a whole number of {block.name} blocks ({block.block}); "
            f"the GGUF format's plan falls back to another type for such layers (quantize with it)"
        )
    grouped, _ = to_groups(weight.detach().float(), block.group)
    levels = encode(block, grouped, floats, ints)
    back = dequantize(block.super_block, levels, floats.float(), ints.float())
    if not torch.equal(back.to(weight.dtype), grouped.to(weight.dtype)):
        worst = float((back - grouped).abs().max())
        raise FormatError(
            f"{name}: its weight is not what its {block.name} fields encode (off by {worst:.3g})"
        )
    return pack(block, levels, floats, ints, rows)


def encode_layer(weight: torch.Tensor, quant: LayerQuant, name: str) -> tuple[np.ndarray, str]:
    """A quantized layer's (out, in) weight and parameters -> (its ggml rows, the type's name)."""
    block = block_of(quant)
    groups = weight.shape[0] * (weight.shape[1] // block.group)
    floats = quant.scale.reshape(groups, -1)
    ints = quant.zero.reshape(groups, -1)
    return _encode_grouped(block, weight.cpu(), floats.cpu(), ints.cpu(), name), block.name


def quantize_tensor(weight: torch.Tensor, type_name: str, name: str) -> np.ndarray:
    """llama.cpp's round-to-nearest of a (rows, cols) tensor to a block type (what
    ``llama-quantize`` does to a tensor without an importance matrix), as ggml rows."""
    block = BLOCK_TYPES[type_name]
    grouped, _ = to_groups(weight.detach().cpu().float(), block.group)
    codes, floats, ints = block.rtn(grouped)
    return pack(block, codes - block.offset, floats, ints, weight.shape[0])


def float_tensor(tensor: torch.Tensor, type_name: str) -> np.ndarray:
    """A tensor as ``f32``, ``f16`` or ``bf16`` (bf16 as ggml's raw bytes, rounded to nearest even)."""
    data = tensor.detach().cpu()
    if type_name == "f32":
        return data.float().numpy()
    if type_name == "f16":
        return data.to(torch.float16).numpy()
    return data.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
