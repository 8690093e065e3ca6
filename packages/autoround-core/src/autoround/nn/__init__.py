"""Quantized layers: :class:`QuantLinear` (integer codes), :class:`FloatQuantLinear` (float
layouts) and :func:`replace_linears`."""

from autoround.nn.float_linear import FloatQuantLinear
from autoround.nn.quant_linear import QuantLinear
from autoround.nn.replace import PackedLinear, replace_linears

__all__ = ["FloatQuantLinear", "PackedLinear", "QuantLinear", "replace_linears"]
