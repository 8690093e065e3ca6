"""Handing a tuned layer to compressed-tensors: ``weight_scale``, ``weight_zero_point``, ``weight``.

compressed-tensors quantizes as ``q = clamp(round(w / scale + zp), qmin, qmax)`` with signed codes
(``[-8, 7]`` for 4 bits) and dequantizes as ``(q - zp) * scale``. autoround's integers (Intel's
conventions) use unsigned codes ``c`` with zero point ``z``, and for symmetric weights a *signed*
scale (the largest-magnitude value maps to code ``-2**(bits-1)``, so all levels are used). Both
describe the same grid when

* ``weight_scale = scale`` (negative where autoround's is: compressed-tensors only multiplies and
  divides by it, and a flipped sign would need code ``+2**(bits-1)``, which does not exist);
* ``weight_zero_point = z - 2**(bits-1)`` (0 for symmetric weights, whose ``z`` is the midpoint).

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

if TYPE_CHECKING:
    from compressed_tensors.quantization import QuantizationScheme


def write_qparams(module: nn.Module, quant: LayerQuant) -> None:
    """Store ``quant`` as ``module``'s compressed-tensors parameters and snap its weight to them.

    ``module.weight`` must hold autoround's quantize-dequantized weight for ``quant``.
    """
    # compressed-tensors attached these to the module; nn.Module can't say what they are.
    args = cast("QuantizationScheme", module.quantization_scheme).weights
    scale_param = cast(torch.Tensor, module.weight_scale)
    scale = quant.scale.to(scale_param.device, scale_param.dtype).reshape(scale_param.shape)
    update_offload_parameter(module, "weight_scale", scale)
    zero_point = getattr(module, "weight_zero_point", None)
    if zero_point is not None:
        midpoint = 2 ** (quant.scheme.bits - 1)
        signed = torch.zeros_like(quant.zero) if quant.scheme.sym else quant.zero - midpoint
        update_offload_parameter(
            module,
            "weight_zero_point",
            signed.to(zero_point.device, zero_point.dtype).reshape(zero_point.shape),
        )
    with torch.no_grad():
        zero_point = getattr(module, "weight_zero_point", None)
        snapped = fake_quantize(module.weight, module.weight_scale, zero_point, args)
    update_offload_parameter(module, "weight", snapped.to(module.weight.dtype))
