"""Swap a model's Linear layers for :class:`QuantLinear` (integer schemes) or
:class:`FloatQuantLinear` (Intel's float layouts) as a checkpoint's config describes them; a
checkpoint of dense quantize-dequantized weights (Intel's fake packing) keeps its Linears and
gives them their activation quantization hook."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from autoround.backends import select
from autoround.errors import CheckpointError
from autoround.modeling.blocks import is_linear_like, linear_shape
from autoround.nn.act_hooks import attach_act_quant
from autoround.nn.float_linear import FloatQuantLinear
from autoround.nn.float_weights import is_float_type
from autoround.nn.quant_linear import QuantLinear
from autoround.schemes import Scheme

#: A layer whose weight stays as the checkpoint stores it.
PackedLinear = QuantLinear | FloatQuantLinear


class LayerSpecs(Protocol):
    """What replacing needs from a checkpoint spec (:class:`~autoround.formats.auto_round.CheckpointSpec`)."""

    @property
    def zero_offset(self) -> int: ...

    def scheme_for(self, layer_name: str) -> Scheme | None: ...

    @property
    def dense_weights(self) -> bool:
        """Whether the quantized layers' weights are stored dense (``auto_round:fake``)."""
        ...


def replace_linears(
    model: nn.Module,
    spec: LayerSpecs,
    backend: str | None = None,
    device: torch.device | str = "meta",
    target_device: torch.device | str = "cpu",
) -> list[str]:
    """Replace every Linear-like layer ``spec`` says is quantized; returns their names.

    A float scheme (MX / NV / FP data types) gets a :class:`FloatQuantLinear`, any other a
    :class:`QuantLinear` (only those read ``spec.zero_offset``). A spec of dense weights
    (``dense_weights``) replaces nothing: its quantized layers stay Linear, each with the forward
    pre-hook quantizing its input (:func:`~autoround.nn.act_hooks.attach_act_quant`); they are
    not among the names returned.

    The new layers' buffers are made on ``device`` (``"meta"``: nothing allocated until the
    checkpoint's tensors are assigned); the backend is chosen for ``target_device``, where the
    layers will run. The old dense weights are dropped, never copied.

    Raises:
        CheckpointError: a float layer whose width its layout cannot hold, naming it.
    """
    replaced: list[str] = []
    dense = spec.dense_weights
    for name, module in list(model.named_modules()):
        scheme = spec.scheme_for(name) if is_linear_like(module) else None
        if scheme is None:
            continue
        if dense:  # the stored weight is the layer's own: only its input is quantized
            attach_act_quant(model, {name: scheme})
            continue
        out_features, in_features = linear_shape(module)
        has_bias = getattr(module, "bias", None) is not None
        layer: nn.Module
        if is_float_type(scheme.data_type):  # Intel's float layouts: the torch backend only
            try:
                layer = FloatQuantLinear(
                    in_features, out_features, scheme, bias=has_bias, backend=backend, device=device
                )
            except ValueError as exc:  # a layout this layer's width cannot hold
                raise CheckpointError(f"{name}: {exc}") from exc
        else:
            layer = QuantLinear(
                in_features,
                out_features,
                scheme,
                spec.zero_offset,
                bias=has_bias,
                backend=select(scheme, (in_features, out_features), target_device, requested=backend).name,
                device=device,
            )
        _set_submodule(model, name, layer)
        replaced.append(name)
    return replaced


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)
