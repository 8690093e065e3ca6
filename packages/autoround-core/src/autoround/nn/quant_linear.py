"""A Linear layer whose weight stays packed as the checkpoint stores it (GPTQ layout).

Buffers keep the checkpoint's names (``qweight``, ``qzeros``, ``scales``, ``bias``), so
``state_dict()`` is the checkpoint's tensors. The product runs through a backend (by name, from
:data:`autoround.backends.BACKENDS`), which repacks the buffers into its own layout once: on
:meth:`QuantLinear.prepare` or the first forward; loading new tensors or moving the layer drops
that cache.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoround.backends import BACKENDS, select
from autoround.layer_quant import group_width
from autoround.packing import gptq_shapes
from autoround.schemes import Scheme


class QuantLinear(nn.Module):
    """``y = x @ W^T + b`` with W held as packed integer codes, per-group scales and zeros.

    Args:
        in_features / out_features: the dense layer's size.
        scheme: bits 2/3/4/8, sym or asym, any group size (a partial last group included).
        zero_offset: what the packing format subtracted from stored zero points (1 for GPTQ's
            ``auto_round:auto_gptq``, 0 for ``auto_round``).
        bias: whether the layer has a bias.
        backend: a name in :data:`BACKENDS`, or None to pick one for ``device``.
        device: where the (empty) buffers are made; ``"meta"`` while loading.
        scales_dtype / bias_dtype: dtypes of those buffers (the checkpoint stores fp16).
    """

    # The buffers ``__init__`` registers, declared for the type checker.
    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: Scheme,
        zero_offset: int,
        bias: bool = False,
        backend: str | None = None,
        device: torch.device | str | None = None,
        scales_dtype: torch.dtype = torch.float16,
        bias_dtype: torch.dtype = torch.float16,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scheme, self.zero_offset = scheme, zero_offset
        self.group_width = group_width(scheme, in_features)
        shapes = gptq_shapes(scheme.bits, scheme.num_groups(in_features), in_features, out_features)
        self.register_buffer("qweight", torch.empty(shapes["qweight"], dtype=torch.int32, device=device))
        self.register_buffer("qzeros", torch.empty(shapes["qzeros"], dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.empty(shapes["scales"], dtype=scales_dtype, device=device))
        bias_tensor = torch.empty(out_features, dtype=bias_dtype, device=device) if bias else None
        self.register_buffer("bias", bias_tensor)
        target = torch.device(device) if device is not None and str(device) != "meta" else torch.device("cpu")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {list(BACKENDS)}")
        self.backend = backend or select(scheme, (in_features, out_features), target).name
        self.backend_state: Any = None
        self._prepared = False

    def prepare(self) -> None:
        """Check the backend serves this layer where it lives, and repack for it (once)."""
        chosen = select(
            self.scheme, (self.in_features, self.out_features), self.qweight.device, requested=self.backend
        )
        with torch.no_grad():
            self.backend_state = chosen.prepare(self)
        self._prepared = True

    def set_backend(self, name: str) -> None:
        """Switch backend; the next forward repacks."""
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; known: {list(BACKENDS)}")
        self.backend = name
        self._drop_prepared()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._prepared:
            self.prepare()
        out = BACKENDS[self.backend].forward(self, x)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def _drop_prepared(self) -> None:
        self.backend_state, self._prepared = None, False

    def _apply(self, fn: Any, recurse: bool = True) -> QuantLinear:
        self._drop_prepared()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._drop_prepared()
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        s = self.scheme
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={s.bits}, "
            f"group_size={s.group_size}, sym={s.sym}, backend={self.backend!r}"
        )
