"""Finding the parts of a transformers model that quantization works on: decoder blocks,
Linear-like layers, a block's captured inputs, MoE experts as per-expert Linear layers."""

from autoround.modeling.blocks import find_block_names, is_linear_like, linear_shape
from autoround.modeling.capture import BlockInputs, block_output, capture_block_inputs
from autoround.modeling.moe import unfuse_experts

__all__ = [
    "BlockInputs",
    "block_output",
    "capture_block_inputs",
    "find_block_names",
    "is_linear_like",
    "linear_shape",
    "unfuse_experts",
]
