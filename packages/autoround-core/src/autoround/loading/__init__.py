"""Loading quantized checkpoints: packed (:func:`load_quantized`, QuantLinear layers) or dense
(:func:`load_dense`, dequantized weights), both through the format registry's spec and the one
strict tensor check (:func:`check_checkpoint_tensors`)."""

from autoround.loading.dense import load_dense
from autoround.loading.quantized import load_quantized
from autoround.loading.tensor_check import check_checkpoint_tensors, read_headers

__all__ = ["check_checkpoint_tensors", "load_dense", "load_quantized", "read_headers"]
