"""The AutoAWQ "gemm" tensor layout of one quantized Linear, and its conversion to the GPTQ layout.

AWQ stores ``qweight`` int32 (in, out * bits / 32): codes packed along the OUTPUT dimension, in
the interleaved order :data:`AWQ_ORDER` (nibble ``i`` of a word holds column ``AWQ_ORDER[i]`` of
its 8 columns); ``qzeros`` int32 (groups, out * bits / 32), packed the same way, zero points stored
as they are (no offset); ``scales`` fp16 (groups, out). Only 4 bits exist in this layout.

:func:`awq_to_gptq` repacks once, at load time, into :mod:`autoround.formats.gptq_layout` with
``zero_offset`` 0 (auto-round's asymmetric ``auto_round`` packing), bit-exactly.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from autoround.errors import CheckpointError
from autoround.formats.base import Capabilities
from autoround.layer_quant import LayerQuant, codes_of
from autoround.packing import pack_int32, unpack_int32
from autoround.schemes import Scheme

if TYPE_CHECKING:  # only for annotations: the layouts themselves need no layer class
    from autoround.nn.quant_linear import QuantLinear

#: Column held by nibble i of each 32-bit word.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: Nibble holding column c: the inverse permutation of :data:`AWQ_ORDER`.
AWQ_REVERSE_ORDER = tuple(AWQ_ORDER.index(c) for c in range(8))
AWQ_BITS = 4
#: Zero points are stored without an offset, so the converted layer uses this one.
ZERO_OFFSET = 0
#: What the layout stores: 4-bit integers, symmetric or not, whole groups only (AutoAWQ's gemm
#: layer, and Intel's exporter, have no partial last group and no per-tensor scale).
CAPABILITIES = Capabilities(data_types=("int",), bits=(AWQ_BITS,), per_tensor=False, whole_groups=True)
#: AWQ's own config (``quant_method: awq``) states one scheme for every layer.
SINGLE_SCHEME = dataclasses.replace(CAPABILITIES, mixed=False)


def _check_bits(bits: int) -> None:
    if bits != AWQ_BITS:
        raise CheckpointError(f"the AWQ gemm layout packs {AWQ_BITS}-bit codes only, got bits={bits}")


def pack_awq(codes: torch.Tensor, bits: int = AWQ_BITS) -> torch.Tensor:
    """Pack (rows, cols) codes along dim 1 in AWQ's interleaved order -> int32 (rows, cols / 8)."""
    _check_bits(bits)
    rows, cols = codes.shape
    order = torch.tensor(AWQ_ORDER, device=codes.device)
    interleaved = codes.reshape(rows, cols // 8, 8)[..., order].reshape(rows, cols)
    return pack_int32(interleaved, bits, dim=1)


def unpack_awq(packed: torch.Tensor, bits: int = AWQ_BITS) -> torch.Tensor:
    """Exact inverse of :func:`pack_awq`: int32 (rows, cols / 8) -> codes (rows, cols), int32."""
    _check_bits(bits)
    plain = unpack_int32(packed, bits, dim=1)
    rows, cols = plain.shape
    reverse = torch.tensor(AWQ_REVERSE_ORDER, device=packed.device)
    return plain.reshape(rows, cols // 8, 8)[..., reverse].reshape(rows, cols).to(torch.int32)


def pack_layer(weight: torch.Tensor, quant: LayerQuant) -> dict[str, torch.Tensor]:
    """One layer's AWQ tensors from its quantize-dequantized (out, in) weight: codes and zero
    points (as they are, symmetric ones included) packed along the output dimension."""
    _check_bits(quant.scheme.bits)
    codes = codes_of(weight, quant).to(torch.int32)
    return {
        "qweight": pack_awq(codes.t().contiguous()),
        "qzeros": pack_awq(quant.zero.t().contiguous()),
        "scales": quant.scale.t().contiguous().to(torch.float16),
    }


def expected_shapes(scheme: Scheme, in_features: int, out_features: int) -> dict[str, tuple[int, int]]:
    """Shapes an AWQ layer's three tensors must have."""
    _check_bits(scheme.bits)
    groups = scheme.num_groups(in_features)
    packed_out = out_features * scheme.bits // 32
    return {
        "qweight": (in_features, packed_out),
        "qzeros": (groups, packed_out),
        "scales": (groups, out_features),
    }


def awq_to_gptq(
    tensors: dict[str, torch.Tensor],
    scheme: Scheme,
    in_features: int,
    out_features: int,
    layer_name: str = "",
) -> dict[str, torch.Tensor]:
    """GPTQ-layout ``qweight`` / ``qzeros`` (zero offset :data:`ZERO_OFFSET`) from AWQ ones; checks shapes.

    ``scales`` (same shape in both layouts) and any other tensor are returned unchanged.
    """
    for key, shape in expected_shapes(scheme, in_features, out_features).items():
        if key not in tensors:
            raise CheckpointError(f"{layer_name}: missing tensor {layer_name}.{key}")
        if tuple(tensors[key].shape) != shape:
            raise CheckpointError(
                f"{layer_name}.{key} has shape {tuple(tensors[key].shape)}, but config.json's AWQ scheme "
                f"(bits={scheme.bits}, group_size={scheme.group_size}) and the layer size "
                f"({out_features}x{in_features}) need {shape}"
            )
    bits = scheme.bits
    codes = unpack_awq(tensors["qweight"], bits)  # (in, out)
    zeros = unpack_awq(tensors["qzeros"], bits)  # (groups, out)
    return {
        **tensors,
        "qweight": pack_int32(codes, bits, dim=0),
        "qzeros": pack_int32(zeros - ZERO_OFFSET, bits, dim=1),
    }


def expect_awq(layer: QuantLinear) -> None:
    """Give an empty QuantLinear AWQ-shaped ``qweight`` / ``qzeros`` placeholders, on their device.

    For loaders that assign checkpoint tensors by name; :func:`convert_layer` turns them back
    into the GPTQ layout the layer computes with.
    """
    shapes = expected_shapes(layer.scheme, layer.in_features, layer.out_features)
    for key in ("qweight", "qzeros"):
        old = getattr(layer, key)
        layer.register_buffer(key, torch.empty(shapes[key], dtype=old.dtype, device=old.device))


def convert_layer(layer: QuantLinear, layer_name: str = "") -> None:
    """Repack a QuantLinear holding AWQ tensors into the GPTQ layout in place (zero offset 0)."""
    tensors = {k: getattr(layer, k) for k in ("qweight", "qzeros", "scales")}
    converted = awq_to_gptq(tensors, layer.scheme, layer.in_features, layer.out_features, layer_name)
    with torch.no_grad():
        for key in ("qweight", "qzeros"):
            layer.register_buffer(key, converted[key])
    layer.zero_offset = ZERO_OFFSET
    if hasattr(layer, "_drop_prepared"):
        layer._drop_prepared()
