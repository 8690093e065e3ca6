"""The engine-neutral part of our method for dense quantize-dequantized weights (Intel's packing
``auto_round:fake``: ``INT8_W8A8``, ``INT4`` W4A4).

Such a checkpoint stores each quantized layer's ``weight`` as an ordinary dense tensor: the
engine's unquantized linear method loads, fuses and shards it as it does any 16-bit layer, and
its product is the engine's dense one. What is ours is the input: before the product each input
is quantize-dequantized per token with the layer's activation kind, core's formula
(:func:`autoround.nn.input_qdq`, what the in-memory model's hooks run).
The parts of a fused layer (q/k/v, gate/up) read one input with one scheme (the engine refuses
parts of different schemes: :func:`autoround_vllm.layers.scheme_for_layer`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from autoround.nn import input_qdq
from autoround.schemes import Scheme

InputQuantizer = Callable[[torch.Tensor], torch.Tensor]


def input_quantizer(scheme: Scheme) -> InputQuantizer:
    """The quantize-dequantize a layer of ``scheme`` applies to its input (the identity for a
    weight-only layer, which a fake checkpoint may hold beside its quantized-input ones).

    Raises:
        NotImplementedError: activations core has not built (naming the fields).
    """
    quantize = input_qdq(scheme)
    return _identity if quantize is None else quantize


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
