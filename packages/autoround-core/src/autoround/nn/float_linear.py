"""A Linear layer whose weight stays in one of Intel's float layouts (MXFP4 / MXFP8 / NVFP4 / FP8).

Buffers keep the checkpoint's names (``weight_packed`` or ``weight``, ``weight_scale``,
``weight_global_scale``; see :mod:`autoround.nn.float_weights`), so ``state_dict()`` is the
checkpoint's tensors. The only backend is ``torch``: dequantize the weight blockwise
(:func:`autoround.nn.float_weights.dequantize`, float32), cast it to the input's dtype, matmul.
The dense weight is made per forward and not kept, as the integer layers' torch backend does.
"""

from __future__ import annotations

import torch
from torch import nn

from autoround.nn.float_weights import FloatLayout, dequantize, is_float_type, layout_for, why_not
from autoround.schemes import Scheme

#: The one backend of float layers (the name integer layers' reference backend has too).
FLOAT_BACKEND = "torch"


class FloatQuantLinear(nn.Module):
    """``y = x @ W^T + b`` with W held in a float layout (weight-only: activations stay as given).

    Args:
        in_features / out_features: the dense layer's size.
        scheme: a weight-only float scheme :func:`~autoround.nn.float_weights.layout_for` reads.
        bias: whether the layer has a bias.
        backend: None or ``"torch"`` (the only one).
        device: where the (empty) buffers are made; ``"meta"`` while loading.
        scale_dtype / bias_dtype: dtype of a float scale of the model's dtype (FP8's
            ``weight_scale``) and of the bias.

    Raises:
        ValueError: a scheme with no float layout, a width the groups do not divide, a backend
            other than ``torch``.
    """

    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: Scheme,
        bias: bool = False,
        backend: str | None = None,
        device: torch.device | str | None = None,
        scale_dtype: torch.dtype = torch.bfloat16,
        bias_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        layout = layout_for(scheme.data_type, scheme.bits, scheme.group_size)
        if layout is None:
            raise ValueError(why_not(scheme.data_type, scheme.bits, scheme.group_size))
        if layout.group_size and in_features % layout.group_size:
            # Intel refuses such layers when packing: a partial group has no stored layout
            raise ValueError(f"in_features={in_features} is not a multiple of group_size={layout.group_size}")
        if backend not in (None, FLOAT_BACKEND):
            raise ValueError(f"float layers run on the {FLOAT_BACKEND!r} backend only, not {backend!r}")
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        self.layout: FloatLayout = layout
        self.backend = FLOAT_BACKEND
        for name, shape in layout.shapes(in_features, out_features).items():
            dtype = layout.tensors[name] or scale_dtype
            self.register_buffer(name, torch.empty(shape, dtype=dtype, device=device))
        bias_tensor = torch.empty(out_features, dtype=bias_dtype, device=device) if bias else None
        self.register_buffer("bias", bias_tensor)

    @staticmethod
    def holds(scheme: Scheme) -> bool:
        """Whether a scheme's layers are float layers (MX / NV / FP data types), whose layout
        :attr:`layout` then describes (or the constructor refuses, saying why)."""
        return is_float_type(scheme.data_type)

    @property
    def stored_leaves(self) -> tuple[str, ...]:
        """The names of the stored weight tensors (the bias aside)."""
        return tuple(self.layout.tensors)

    @property
    def exact_dtype_leaves(self) -> tuple[str, ...]:
        """Stored tensors whose dtype is the layout's (others take any float dtype)."""
        return tuple(name for name, dtype in self.layout.tensors.items() if dtype is not None)

    def prepare(self) -> None:
        """Nothing to repack: the torch backend reads the stored tensors as they are."""

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight ``(out, in)``, computed in float32 and cast to ``dtype``."""
        tensors = {name: getattr(self, name) for name in self.layout.tensors}
        return dequantize(self.layout.kind, tensors).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return nn.functional.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout.kind}, "
            f"group_size={self.layout.group_size}, backend={self.backend!r}"
        )
