"""Handing a tuned layer to compressed-tensors: ``weight_scale``, ``weight_zero_point``, ``weight``.

The translation of autoround's grid (unsigned codes, zero point ``z``, a signed scale for
symmetric weights) into compressed-tensors' (signed codes, ``weight_zero_point = z - 2**(bits-1)``,
the scale with its sign) is core's :func:`autoround.formats.ct_qparams`, the one that core's
``llm_compressor`` format writes with; this module only stores it in the parameters
compressed-tensors attached to the layer.

The scale is stored in the dtype compressed-tensors gave ``weight_scale`` (the weight's dtype);
rounding it (fp16 -> bf16) moves the grid a little, so the weight is finally set to
compressed-tensors' own ``fake_quantize`` of the tuned weight under the stored parameters: the model
in memory then computes exactly what the packed checkpoint will dequantize to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from compressed_tensors.offload import update_offload_parameter
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from torch import nn

from autoround import LayerQuant
from autoround.formats import ct_qparams

if TYPE_CHECKING:
    from compressed_tensors.quantization import QuantizationScheme


def write_qparams(module: nn.Module, quant: LayerQuant) -> None:
    """Store ``quant`` as ``module``'s compressed-tensors parameters and snap its weight to them.

    ``module.weight`` must hold autoround's quantize-dequantized weight for ``quant``.
    """
    # compressed-tensors attached these to the module; nn.Module can't say what they are.
    args = cast("QuantizationScheme", module.quantization_scheme).weights
    scale, signed = ct_qparams(quant)
    scale_param = cast(torch.Tensor, module.weight_scale)
    update_offload_parameter(
        module, "weight_scale", scale.to(scale_param.device, scale_param.dtype).reshape(scale_param.shape)
    )
    zero_point = getattr(module, "weight_zero_point", None)
    if zero_point is not None:
        update_offload_parameter(
            module,
            "weight_zero_point",
            signed.to(zero_point.device, zero_point.dtype).reshape(zero_point.shape),
        )
    with torch.no_grad():
        zero_point = getattr(module, "weight_zero_point", None)
        snapped = fake_quantize(module.weight, module.weight_scale, zero_point, args)
    update_offload_parameter(module, "weight", snapped.to(module.weight.dtype))
