"""The GPTQ tensor layout of one quantized Linear: ``qweight``, ``qzeros``, ``scales``.

``qweight`` is int32 (in * bits / 32, out): codes packed along the input dimension.
``qzeros`` is int32 (groups, out * bits / 32): zero points packed along the output dimension,
stored minus ``zero_offset`` (1 in the GPTQ convention, 0 in auto-round's asymmetric layout).
``scales`` is fp16 (groups, out). Shared by every format that stores this layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from autoround.errors import CheckpointError
from autoround.layer_quant import LayerQuant, codes_of
from autoround.packing import gptq_shapes, pack_int32, unpack_int32
from autoround.schemes import PER_CHANNEL, Scheme

if TYPE_CHECKING:
    from autoround.quantized_model import QuantizedModel


def pack_layer(weight: torch.Tensor, quant: LayerQuant, zero_offset: int) -> dict[str, torch.Tensor]:
    """Tensors of one layer from its quantize-dequantized (out, in) weight."""
    codes = codes_of(weight, quant)
    return layer_tensors(pack_int32(codes.t().contiguous(), quant.scheme.bits, dim=0), quant, zero_offset)


def layer_tensors(qweight: torch.Tensor, quant: LayerQuant, zero_offset: int) -> dict[str, torch.Tensor]:
    """A layer's ``qweight`` (its codes, already packed along the inputs) with the ``qzeros`` and
    ``scales`` of ``quant``; a zero point the ``zero_offset`` convention cannot store is refused."""
    stored_zero = quant.zero - zero_offset
    if stored_zero.min() < 0:
        raise CheckpointError(
            "a zero point of 0 cannot be stored in the GPTQ 'zero minus one' convention; "
            "use a packing without the offset (auto_round's asymmetric layout)"
        )
    return {
        "qweight": qweight,
        "qzeros": pack_int32(stored_zero.t().contiguous(), quant.scheme.bits, dim=1),
        "scales": quant.scale.t().contiguous().to(torch.float16),
    }


def act_order_indices(scheme: Scheme, in_features: int) -> torch.Tensor:
    """GPTQ's ``g_idx`` without act-order: the group of each input, int32 (in,)."""
    group = in_features if scheme.group_size in (PER_CHANNEL, 0) else scheme.group_size
    return (torch.arange(in_features, dtype=torch.int32) // group).to(torch.int32)


def zero_problems(qm: QuantizedModel) -> list[str]:
    """Layers with a zero point of 0, which GPTQ's zero-minus-one convention cannot store."""
    found = []
    for name, quant in qm.layers.items():
        zeros = int((quant.zero < 1).sum())
        if zeros:
            found.append(
                f"{name}: {zeros} group(s) have zero point 0, which GPTQ's 'zero minus one' convention "
                f"cannot store (Intel clamps it, silently shifting those groups); save this asymmetric "
                f"model as auto_round, auto_round:auto_awq or auto_awq (zero points stored as they are)"
            )
    return found


def expected_shapes(scheme: Scheme, in_features: int, out_features: int) -> dict[str, tuple[int, int]]:
    """Shapes the three tensors must have for a layer of this size and scheme."""
    return gptq_shapes(scheme.bits, scheme.num_groups(in_features), in_features, out_features)


def unpack_layer(
    tensors: dict[str, torch.Tensor],
    scheme: Scheme,
    in_features: int,
    out_features: int,
    zero_offset: int,
    layer_name: str = "",
) -> tuple[torch.Tensor, LayerQuant]:
    """Codes (uint8, (out, in)) and parameters of one stored layer; checks every shape."""
    expected = expected_shapes(scheme, in_features, out_features)
    for key, shape in expected.items():
        if key not in tensors:
            raise CheckpointError(f"{layer_name}: missing tensor {layer_name}.{key}")
        if tuple(tensors[key].shape) != shape:
            raise CheckpointError(
                f"{layer_name}.{key} has shape {tuple(tensors[key].shape)}, but config.json's scheme "
                f"(bits={scheme.bits}, group_size={scheme.group_size}) and the layer size "
                f"({out_features}x{in_features}) need {shape}"
            )
    bits = scheme.bits
    codes = unpack_int32(tensors["qweight"], bits, dim=0).t().contiguous().to(torch.uint8)
    zeros = unpack_int32(tensors["qzeros"], bits, dim=1).to(torch.int32) + zero_offset
    scale = tensors["scales"].t().contiguous()
    return codes, LayerQuant(scheme, scale, zeros.t().contiguous())
