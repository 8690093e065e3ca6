"""Backends that compute a :class:`~autoround.nn.QuantLinear`'s product, by name, and the choice.

:data:`BACKENDS` is ordered by preference: :func:`select` takes the first entry that serves the
layer, so registering a new backend before ``torch`` makes it the default where it applies. A backend
with ``auto_select`` false (Triton under its CPU interpreter) serves only when asked by name.
"""

from __future__ import annotations

import torch

from autoround.backends.base import Backend, PackedLayer
from autoround.backends.cpu import CpuBackend, dense_forward, int4_forward
from autoround.backends.torch_backend import TorchBackend
from autoround.backends.triton_backend import TritonBackend
from autoround.errors import UnsupportedLayerError
from autoround.schemes import Scheme

#: Backend name -> backend, most preferred first; ``torch`` (serves everything) last.
BACKENDS: dict[str, Backend] = {
    "triton": TritonBackend(),
    "cpu": CpuBackend(),
    "torch": TorchBackend(),
}


def register(backend: Backend, first: bool = False) -> None:
    """Add (or replace) a backend; ``first`` makes it the most preferred."""
    BACKENDS.pop(backend.name, None)
    if first:
        rest = dict(BACKENDS)
        BACKENDS.clear()
        BACKENDS[backend.name] = backend
        BACKENDS.update(rest)
    else:
        BACKENDS[backend.name] = backend


def refusals(
    scheme: Scheme, shape: tuple[int, int], device: torch.device | str, dtype: torch.dtype | None = None
) -> dict[str, str | None]:
    """Every backend's answer for a layer: None (serves it) or the reason it does not."""
    in_features, out_features = shape
    dev = torch.device(device)
    return {name: b.supports(scheme, in_features, out_features, dev, dtype) for name, b in BACKENDS.items()}


def select(
    scheme: Scheme,
    shape: tuple[int, int],
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    requested: str | None = None,
) -> Backend:
    """The backend for a layer of ``shape`` = (in_features, out_features) on ``device``.

    ``requested`` forces one by name. Raises ValueError for an unknown name (listing the known
    ones) and UnsupportedLayerError when the asked backend, or every backend, cannot serve the
    layer (saying why, and which would).
    """
    if requested is not None and requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; known: {list(BACKENDS)}")
    answers = refusals(scheme, shape, device, dtype)
    serving = [name for name, reason in answers.items() if reason is None]
    layer = f"{scheme.bits}-bit group {scheme.group_size} layer {shape[0]}->{shape[1]} on {device}"
    if requested is not None:
        if answers[requested] is None:
            return BACKENDS[requested]
        raise UnsupportedLayerError(
            f"backend {requested!r} cannot serve a {layer}: {answers[requested]}; "
            f"backends that would: {serving or 'none'}"
        )
    automatic = [name for name in serving if getattr(BACKENDS[name], "auto_select", True)]
    if not automatic:
        why = "; ".join(f"{name}: {reason}" for name, reason in answers.items())
        raise UnsupportedLayerError(f"no backend serves a {layer} ({why})")
    return BACKENDS[automatic[0]]


__all__ = [
    "BACKENDS",
    "Backend",
    "PackedLayer",
    "dense_forward",
    "int4_forward",
    "refusals",
    "register",
    "select",
]
