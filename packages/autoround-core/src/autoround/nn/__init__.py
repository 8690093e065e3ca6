"""Quantized layers: :class:`QuantLinear` (integer codes), :class:`FloatQuantLinear` (float
layouts) and :func:`replace_linears`; :func:`attach_act_quant` / :func:`detach_act_quant` give
layers (or take away) the activation quantize-dequantize of their schemes, :func:`input_qdq` is
that function for a runtime's own layer."""

from autoround.nn.act_hooks import attach_act_quant, detach_act_quant, input_qdq
from autoround.nn.float_linear import FloatQuantLinear
from autoround.nn.quant_linear import QuantLinear
from autoround.nn.replace import PackedLinear, replace_linears

__all__ = [
    "FloatQuantLinear",
    "PackedLinear",
    "QuantLinear",
    "attach_act_quant",
    "detach_act_quant",
    "input_qdq",
    "replace_linears",
]
