"""What a backend is: a named way to compute ``x @ W^T + b`` for a packed layer (the
checkpoint's GPTQ-layout buffers: :class:`autoround.nn.QuantLinear` is the one in this package).

A backend declares what it serves (:meth:`Backend.supports` returns ``None`` or the reason it
cannot), repacks a layer's checkpoint tensors into its own layout once (:meth:`Backend.prepare`,
whose result the layer caches) and computes the product (:meth:`Backend.forward`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from autoround.schemes import Scheme


class PackedLayer(Protocol):
    """What a backend reads of a layer: its size, scheme and packed buffers (GPTQ layout), and
    the cache it keeps its own repacked layout in. Stated here so that backends do not depend on
    the layer class that uses them."""

    in_features: int
    out_features: int
    scheme: Scheme
    zero_offset: int
    group_width: int
    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    backend_state: Any


class Backend(Protocol):
    """The interface every entry of :data:`autoround.backends.BACKENDS` provides."""

    name: str
    #: Largest relative error against dequantize-then-matmul in fp32, with fp32 activations.
    fp32_tolerance: float
    # Optional: ``auto_select`` (default True); False means "serve only when asked by name".

    def supports(
        self,
        scheme: Scheme,
        in_features: int,
        out_features: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> str | None:
        """None if this backend serves such a layer, else why not (one short clause)."""
        ...

    def prepare(self, layer: PackedLayer) -> Any:
        """Repack ``layer``'s buffers into this backend's layout; the layer caches the result."""
        ...

    def forward(self, layer: PackedLayer, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (bias not added) in ``x``'s dtype, using ``layer.backend_state``."""
        ...


def int_scheme_reason(scheme: Scheme, bits: tuple[int, ...]) -> str | None:
    """The common refusals: a non-integer data type or bits outside ``bits``."""
    if scheme.data_type != "int":
        return f"data_type {scheme.data_type!r} is not served (only 'int')"
    if scheme.bits not in bits:
        return f"bits={scheme.bits} is not served (bits {list(bits)})"
    return None
