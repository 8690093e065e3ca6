"""The Triton matmul as a PyTorch custom op, so ``torch.compile`` can hold it inside one graph.

Dynamo cannot trace Triton's Python launcher or the per-shape kernel choice, and a graph break
at every quantized layer leaves the launches on the host, which is what makes eager decode of
small models slower than bf16. As an opaque op with a shape-only fake, a whole decode step
compiles into one graph that CUDA graphs replay (transformers' ``cache_implementation="static"``
compiles exactly that step). Eager calls skip the op: its dispatch costs more host time than it
saves there.
"""

from __future__ import annotations

import torch

OP_NAME = "autoround::triton_quant_matmul"


@torch.library.custom_op(OP_NAME, mutates_args=())
def triton_quant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
) -> torch.Tensor:
    """``x @ W`` for the packed (in, out) weight: :func:`autoround.kernels.triton_gemm.quant_matmul`."""
    from autoround.kernels.triton_gemm import quant_matmul

    return quant_matmul(x, qweight, qzeros, scales, bits, group_width, zero_offset)


@triton_quant_matmul.register_fake
def _(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_width: int,
    zero_offset: int,
) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], scales.shape[1]))
