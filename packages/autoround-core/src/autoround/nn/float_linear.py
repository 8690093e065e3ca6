"""A Linear layer whose weight stays in one of Intel's float layouts (MXFP4 / MXFP8 / NVFP4 / FP8).

Buffers keep the checkpoint's names (``weight_packed`` or ``weight``, ``weight_scale``,
``weight_global_scale``; see :mod:`autoround.nn.float_weights`), so ``state_dict()`` is the
checkpoint's tensors. The only backend is ``torch``: dequantize the weight blockwise
(:func:`autoround.nn.float_weights.dequantize`, float32), cast it to the input's dtype, matmul.
The dense weight is made per forward and not kept, as the integer layers' torch backend does.

A scheme that quantizes activations has its kind (:data:`~autoround.dtypes.act_kinds.ACT_KINDS`)
in :attr:`FloatQuantLinear.act_kind`, and every forward quantize-dequantizes the input with the
kind's formula before the product, as the in-memory model's hooks do. Dynamic kinds (MX blocks of
32, FP8 per token or per group) store nothing; a calibrated one (``FP8_STATIC``, NVFP4 W4A4:
:mod:`autoround.nn.input_scales`) adds its stored ``input_scale`` / ``input_global_scale`` (1,)
buffer, which :meth:`FloatQuantLinear.prepare` turns into the range.
"""

from __future__ import annotations

import torch
from torch import nn

from autoround.dtypes.activations import ActKind, activation_args, qdq_activation
from autoround.nn.float_weights import FloatLayout, dequantize, is_float_type, layout_for, why_not
from autoround.nn.input_scales import INPUT_DTYPES, INPUT_TENSORS, absmax_of, calibrated_kind
from autoround.schemes import Scheme

#: The one backend of float layers (the name integer layers' reference backend has too).
FLOAT_BACKEND = "torch"


class FloatQuantLinear(nn.Module):
    """``y = x @ W^T + b`` with W held in a float layout; the input quantize-dequantized first
    where the scheme quantizes activations (else it stays as given).

    Args:
        in_features / out_features: the dense layer's size.
        scheme: a float scheme :func:`~autoround.nn.float_weights.layout_for` reads, its
            activations weight-only or of a built kind.
        bias: whether the layer has a bias.
        backend: None or ``"torch"`` (the only one).
        device: where the (empty) buffers are made; ``"meta"`` while loading.
        scale_dtype / bias_dtype: dtype of a float scale stored in the model's dtype (FP8's
            ``weight_scale``) and of the bias. float32 by default: a checkpoint's scale of any
            float dtype converts to it exactly, whatever a host's loader casts into the buffer.

    Raises:
        ValueError: a scheme with no float layout, a width the groups do not divide, a backend
            other than ``torch``.
        NotImplementedError: activations of a kind not built.
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
        scale_dtype: torch.dtype = torch.float32,
        bias_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        layout = layout_for(scheme.data_type, scheme.bits, scheme.group_size, scheme.block_shape)
        if layout is None:
            raise ValueError(why_not(scheme.data_type, scheme.bits, scheme.group_size, scheme.block_shape))
        if layout.block is None and layout.group_size and in_features % layout.group_size:
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
        args = activation_args(scheme)
        #: the activation kind and the group it takes (None: the kind's own grouping)
        self.act_kind: ActKind | None = None if args is None else args[0]
        self.act_group: int | None = None if args is None else args[1]
        calibrated = calibrated_kind(scheme)
        self.input_tensors: dict[str, torch.dtype | None] = {}
        if calibrated is not None:
            leaf, fixed = INPUT_TENSORS[calibrated], INPUT_DTYPES[calibrated]
            self.input_tensors[leaf] = fixed
            self.register_buffer(leaf, torch.empty(1, dtype=fixed or scale_dtype, device=device))
        self.input_absmax: torch.Tensor | None = None
        bias_tensor = torch.empty(out_features, dtype=bias_dtype, device=device) if bias else None
        self.register_buffer("bias", bias_tensor)

    @staticmethod
    def holds(scheme: Scheme) -> bool:
        """Whether a scheme's layers are float layers (MX / NV / FP data types), whose layout
        :attr:`layout` then describes (or the constructor refuses, saying why)."""
        return is_float_type(scheme.data_type)

    @property
    def stored_leaves(self) -> tuple[str, ...]:
        """The names of the stored weight tensors and calibrated activation scale (the bias aside)."""
        return (*self.layout.tensors, *self.input_tensors)

    @property
    def exact_dtype_leaves(self) -> tuple[str, ...]:
        """Stored tensors whose dtype is the layout's (others take any float dtype)."""
        stored = {**self.layout.tensors, **self.input_tensors}
        return tuple(name for name, dtype in stored.items() if dtype is not None)

    def prepare(self) -> None:
        """Nothing to repack (the torch backend reads the stored weight as it is); a calibrated
        activation scale becomes the range the input is quantized with."""
        calibrated = calibrated_kind(self.scheme)
        if calibrated is not None:
            stored = getattr(self, INPUT_TENSORS[calibrated])
            self.input_absmax = absmax_of(calibrated, stored).to(stored.device)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight ``(out, in)``, computed in float32 and cast to ``dtype``."""
        tensors = {name: getattr(self, name) for name in self.layout.tensors}
        return dequantize(self.layout.kind, tensors, self.layout.block).to(dtype)

    def quantize_input(self, x: torch.Tensor, absmax: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` quantize-dequantized by the scheme's activation kind: a dynamic one from ``x``
        alone, a calibrated one with the layer's range or ``absmax`` (a fused engine layer's);
        ``x`` itself for weight-only schemes."""
        if self.act_kind is None:
            return x
        if not self.input_tensors:  # dynamic: each input's own scales, no stored range
            if self.act_group is None:
                return qdq_activation(x, self.act_kind)
            return qdq_activation(x, self.act_kind, self.act_group)
        if absmax is None:
            if self.input_absmax is None:  # loaded without prepare(): read the stored scale now
                self.prepare()
            absmax = self.input_absmax
        return qdq_activation(x, self.act_kind, absmax=absmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantize_input(x)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return nn.functional.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout.kind}, "
            f"group_size={self.layout.group_size}, backend={self.backend!r}"
            + ("" if self.act_kind is None else f", activations={self.act_kind}")
        )
