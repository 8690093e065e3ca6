"""What a backend is: a named way to compute ``x @ W^T + b`` for a :class:`QuantLinear`.

A backend declares what it serves (:meth:`Backend.supports` returns ``None`` or the reason it
cannot), repacks a layer's checkpoint tensors into its own layout once (:meth:`Backend.prepare`,
whose result the layer caches) and computes the product (:meth:`Backend.forward`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

from autoround.schemes import Scheme

if TYPE_CHECKING:
    from autoround.nn.quant_linear import QuantLinear


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

    def prepare(self, layer: QuantLinear) -> Any:
        """Repack ``layer``'s buffers into this backend's layout; the layer caches the result."""
        ...

    def forward(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (bias not added) in ``x``'s dtype, using ``layer.backend_state``."""
        ...


def int_scheme_reason(scheme: Scheme, bits: tuple[int, ...]) -> str | None:
    """The common refusals: a non-integer data type or bits outside ``bits``."""
    if scheme.data_type != "int":
        return f"data_type {scheme.data_type!r} is not served (only 'int')"
    if scheme.bits not in bits:
        return f"bits={scheme.bits} is not served (bits {list(bits)})"
    return None
