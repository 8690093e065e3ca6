"""Quantized layers: :class:`QuantLinear` and :func:`replace_linears`."""

from autoround.nn.quant_linear import QuantLinear
from autoround.nn.replace import replace_linears

__all__ = ["QuantLinear", "replace_linears"]
