"""The interface every data type implements, and the per-layer quantization parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class QParams:
    """Per-group quantization parameters of one weight, in grouped layout (one row per group).

    ``scale`` has shape (groups_total, 1) in the scale dtype (fp16 for integers, as Intel stores
    it); ``zero`` has the same shape and holds the integer zero point (for symmetric integers the
    constant ``2**(bits-1)``), stored as float so that it broadcasts in the dequantize formula.
    """

    scale: torch.Tensor
    zero: torch.Tensor


class DataType(Protocol):
    """Pure tensor math of one data type. ``grouped`` is a (groups, group_size) float tensor."""

    # Read-only members, so that frozen dataclasses implement the protocol.
    @property
    def name(self) -> str: ...

    @property
    def allowed_bits(self) -> tuple[int, ...]: ...

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> QParams:
        """Scales and zero points of each group, optionally shrunk by clipping factors."""
        ...

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Unsigned integer codes in [0, 2**bits - 1] (as float, with a straight-through
        gradient), after adding the rounding offset ``v`` before rounding."""
        ...

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """Codes back to real values (float32 or wider of the inputs)."""
        ...

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize in one call, in ``grouped``'s dtype."""
        ...

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group statistics that stay fixed while a weight is tuned."""
        ...

    def tuning_qdq(
        self,
        grouped: torch.Tensor,
        group_range: tuple[torch.Tensor, torch.Tensor],
        bits: int,
        sym: bool,
        v: torch.Tensor,
        min_scale: torch.Tensor,
        max_scale: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`qdq`'s values for the tuning loop, with gradients for v and the factors."""
        ...
