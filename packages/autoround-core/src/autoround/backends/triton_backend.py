"""The `triton` backend (CUDA): the Triton GEMM/GEMV of :mod:`autoround.kernels.triton_gemm` (bits 2, 4, 8).

The kernel reads the checkpoint's GPTQ tensors directly, so preparing only makes them contiguous.
Off CUDA it serves only under ``TRITON_INTERPRET=1`` (how CI checks its numerics on the CPU).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from autoround.backends.base import PackedLayer, int_scheme_reason
from autoround.kernels.triton_op import triton_quant_matmul
from autoround.schemes import Scheme

#: Bits the kernel serves (3-bit codes straddle int32 words; not built).
TRITON_BITS = (2, 4, 8)


@functools.cache
def triton_available() -> bool:
    """True when the ``triton`` package imports."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """True when Triton kernels run on the CPU through the interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonBackend:
    """In-register dequantizing matmul on CUDA."""

    fp32_tolerance = 1e-4
    name = "triton"

    @property
    def auto_select(self) -> bool:
        """Chosen without being asked only when compiled (the interpreter is for checking numerics)."""
        return not interpreting()

    def supports(
        self,
        scheme: Scheme,
        in_features: int,
        out_features: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> str | None:
        if not triton_available():
            return "triton is not installed"
        if torch.device(device).type != "cuda" and not interpreting():
            return f"device {torch.device(device).type!r} is not CUDA (set TRITON_INTERPRET=1 to interpret)"
        return int_scheme_reason(scheme, TRITON_BITS)

    def prepare(self, layer: PackedLayer) -> Any:
        return {k: getattr(layer, k).contiguous() for k in ("qweight", "qzeros", "scales")}

    def forward(self, layer: PackedLayer, x: torch.Tensor) -> torch.Tensor:
        state = layer.backend_state
        args = (state["qweight"], state["qzeros"], state["scales"], layer.scheme.bits, layer.group_width)
        if torch.compiler.is_compiling():  # one opaque op in the graph (autoround.kernels.triton_op)
            return triton_quant_matmul(x.contiguous(), *args, layer.zero_offset)
        from autoround.kernels.triton_gemm import quant_matmul

        return quant_matmul(x.contiguous(), *args, layer.zero_offset)
