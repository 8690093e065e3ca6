"""Activation quantization of the in-memory quantized model: a forward pre-hook per layer.

After the weights of a scheme that quantizes activations are quantized, the layer's input is
quantize-dequantized on every forward by its kind's formula (dynamic: per token, per MX block or
per group; the registry :data:`~autoround.dtypes.act_kinds.ACT_KINDS`), so evaluating or
generating with the in-memory model sees what Intel's ``WrapperWALayer`` computes. A pre-hook,
not a wrapper module: layer names, ``state_dict`` keys and the saved checkpoint stay those of
the plain model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoround.dtypes.activations import ActKind, activation_args, qdq_activation
from autoround.schemes import Scheme

#: The attribute holding a layer's hook handle (one hook per layer, never stacked).
HANDLE_ATTR = "_autoround_act_quant"


class ActQuantHook:
    """A forward pre-hook quantize-dequantizing a layer's first positional input.

    ``group_size`` is the scheme's ``act_group_size`` for a kind whose grouping is the scheme's
    choice (``fp8_group``), None for the others (per token, MX blocks of 32)."""

    def __init__(self, kind: ActKind, group_size: int | None = None) -> None:
        self.kind = kind
        self.group_size = group_size

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        # looked up in this module on each call, so a test can put another formula in its place
        if self.group_size is None:
            x = qdq_activation(args[0], self.kind)
        else:
            x = qdq_activation(args[0], self.kind, self.group_size)
        return (x, *args[1:])

    def __repr__(self) -> str:
        group = "" if self.group_size is None else f", group_size={self.group_size}"
        return f"ActQuantHook({self.kind!r}{group})"


def act_kind_of(module: nn.Module) -> ActKind | None:
    """The activation kind a layer's hook applies; None when it has none."""
    entry = getattr(module, HANDLE_ATTR, None)
    return None if entry is None else entry[0].kind


def hook_for(scheme: Scheme) -> ActQuantHook | None:
    """The hook of a layer quantized with ``scheme``; None for a weight-only scheme.

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
    """
    args = activation_args(scheme)
    return None if args is None else ActQuantHook(*args)


def attach_act_quant(model: nn.Module, schemes: Mapping[str, Scheme]) -> int:
    """Give every layer of ``schemes`` (name -> scheme) that quantizes activations its hook;
    returns how many layers got one. A layer that has one keeps a single hook (replaced).

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
    """
    attached = 0
    for name, scheme in schemes.items():
        hook = hook_for(scheme)
        if hook is None:
            continue
        module = model.get_submodule(name)
        detach_act_quant(module)
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
