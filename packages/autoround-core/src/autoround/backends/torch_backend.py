"""The `torch` backend: portable reference. Dequantize in fp32, then matmul; any device, every scheme.

Exact against dequantize-then-matmul by construction (it is that). Nothing is cached beyond the
checkpoint's own buffers, so it is slow for large layers and small in memory.
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.backends.base import PackedLayer, int_scheme_reason
from autoround.kernels import reference
from autoround.packing import SUPPORTED_BITS
from autoround.schemes import Scheme


class TorchBackend:
    """Reference: :func:`autoround.kernels.reference.quant_matmul` per forward."""

    fp32_tolerance = 1e-5
    name = "torch"

    def supports(
        self,
        scheme: Scheme,
        in_features: int,
        out_features: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> str | None:
        return int_scheme_reason(scheme, SUPPORTED_BITS)

    def prepare(self, layer: PackedLayer) -> Any:
        return None

    def forward(self, layer: PackedLayer, x: torch.Tensor) -> torch.Tensor:
        return reference.quant_matmul(
            x,
            layer.qweight,
            layer.qzeros,
            layer.scales,
            layer.scheme.bits,
            layer.group_width,
            layer.zero_offset,
        )
