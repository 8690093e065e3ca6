"""Quantization algorithms, by name. Each turns planned layers into quantized weights."""

from autoround.algorithms.rtn import quantize_rtn

__all__ = ["quantize_rtn"]
