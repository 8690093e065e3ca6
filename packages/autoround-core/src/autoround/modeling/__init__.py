"""Finding the parts of a transformers model that quantization works on."""

from autoround.modeling.blocks import find_block_names, is_linear_like, linear_shape

__all__ = ["find_block_names", "is_linear_like", "linear_shape"]
