"""Activation quantization of the in-memory quantized model: a forward pre-hook per layer.

After a W8A8 scheme's weights are quantized, the layer's input is quantize-dequantized on every
forward (dynamic per token, :mod:`autoround.dtypes.activations`), so evaluating or generating
with the in-memory model sees what the served checkpoint computes. A pre-hook, not a wrapper
module: layer names, ``state_dict`` keys and the saved checkpoint stay those of the plain model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoround.dtypes.activations import ActKind, activation_kind, qdq_activation
from autoround.schemes import Scheme

#: The attribute holding a layer's hook handle (one hook per layer, never stacked).
HANDLE_ATTR = "_autoround_act_quant"


class ActQuantHook:
    """A forward pre-hook quantize-dequantizing a layer's first positional input."""

    def __init__(self, kind: ActKind) -> None:
        self.kind = kind

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        return (qdq_activation(args[0], self.kind), *args[1:])

    def __repr__(self) -> str:
        return f"ActQuantHook({self.kind!r})"


def act_kind_of(module: nn.Module) -> ActKind | None:
    """The activation kind a layer's hook applies; None when it has none."""
    entry = getattr(module, HANDLE_ATTR, None)
    return None if entry is None else entry[0].kind


def attach_act_quant(model: nn.Module, schemes: Mapping[str, Scheme]) -> int:
    """Give every layer of ``schemes`` (name -> scheme) that quantizes activations its hook;
    returns how many layers got one. A layer that has one keeps a single hook (replaced).

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
    """
    attached = 0
    for name, scheme in schemes.items():
        kind = activation_kind(scheme)
        if kind is None:
            continue
        module = model.get_submodule(name)
        detach_act_quant(module)
        hook = ActQuantHook(kind)
        handle = module.register_forward_pre_hook(hook)
        setattr(module, HANDLE_ATTR, (hook, handle))
        attached += 1
    return attached


def detach_act_quant(model: nn.Module) -> int:
    """Remove the activation hooks from ``model`` and its submodules; returns how many."""
    removed = 0
    for module in model.modules():
        entry = getattr(module, HANDLE_ATTR, None)
        if entry is not None:
            entry[1].remove()
            delattr(module, HANDLE_ATTR)
            removed += 1
    return removed
