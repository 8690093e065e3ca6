"""Activation quantization of the in-memory quantized model: a forward pre-hook per layer.

After the weights of a scheme that quantizes activations are quantized, the layer's input is
quantize-dequantized on every forward by its kind's formula (the registry
:data:`~autoround.dtypes.act_kinds.ACT_KINDS`): dynamic kinds per token, per MX block or per
group, as Intel's ``WrapperWALayer`` computes them; calibrated kinds (static FP8, NVFP4's) with
the layer's calibrated range (``LayerQuant.input_absmax``), as the saved checkpoint's
``input_scale`` / ``input_global_scale`` serve them. (Intel's ``WrapperWALayer`` passes that range
under a keyword its functions ignore, so its in-memory model takes each input's own range.) A
pre-hook, not a wrapper module: layer names, ``state_dict`` keys and the saved checkpoint stay
those of the plain model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from autoround.dtypes.activations import ActKind, activation_args, calibrated_entry, qdq_activation
from autoround.dtypes.shared_input import LAST_INPUT, range_key
from autoround.schemes import Scheme

#: The attribute holding a layer's hook handle (one hook per layer, never stacked).
HANDLE_ATTR = "_autoround_act_quant"


class ActQuantHook:
    """A forward pre-hook quantize-dequantizing a layer's first positional input.

    ``group_size`` is the scheme's ``act_group_size`` for a kind whose grouping is the scheme's
    choice (``fp8_group``), None for the others (per token, MX blocks of 32, per tensor, 16).
    ``absmax`` is a calibrated kind's range (0-dim float32), None for the dynamic kinds."""

    def __init__(
        self, kind: ActKind, group_size: int | None = None, absmax: torch.Tensor | None = None
    ) -> None:
        self.kind = kind
        self.group_size = group_size
        self.absmax = absmax
        # layers reading one input (q / k / v) with equal keys share one result (shared_input.py)
        self._key = ("hook", kind, group_size, range_key(absmax))

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        x = LAST_INPUT.get(args[0], self._key, self.quantize)
        return (x, *args[1:])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` quantize-dequantized by the layer's kind (every call computes it afresh)."""
        # looked up in this module on each call, so a test can put another formula in its place
        if self.absmax is not None:
            return qdq_activation(x, self.kind, self.group_size, self.absmax)
        if self.group_size is None:
            return qdq_activation(x, self.kind)
        return qdq_activation(x, self.kind, self.group_size)

    def __repr__(self) -> str:
        group = "" if self.group_size is None else f", group_size={self.group_size}"
        absmax = "" if self.absmax is None else f", absmax={float(self.absmax):.6g}"
        return f"ActQuantHook({self.kind!r}{group}{absmax})"


def act_kind_of(module: nn.Module) -> ActKind | None:
    """The activation kind a layer's hook applies; None when it has none."""
    entry = getattr(module, HANDLE_ATTR, None)
    return None if entry is None else entry[0].kind


def hook_for(scheme: Scheme, absmax: torch.Tensor | None = None) -> ActQuantHook | None:
    """The hook of a layer quantized with ``scheme``; None for a weight-only scheme. ``absmax``:
    the layer's calibrated input range, for a scheme whose activations take one.

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
        ValueError: a calibrated scheme without ``absmax``, or a dynamic one with it.
    """
    args = activation_args(scheme)
    if args is None:
        return None
    calibrated = calibrated_entry(scheme) is not None
    if calibrated != (absmax is not None):
        wanted = "needs its calibrated input range" if calibrated else "takes no calibrated range"
        raise ValueError(f"activation kind {args[0]!r} {wanted} (absmax={absmax})")
    kind, group = args
    return ActQuantHook(
        kind, group, None if absmax is None else absmax.detach().to(torch.float32).reshape(())
    )


def input_qdq(scheme: Scheme) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The quantize-dequantize a layer of ``scheme`` with dynamic activations applies to its
    input (what its hook runs: a runtime's own layer calls it before its product); None for a
    weight-only scheme.

    Raises:
        NotImplementedError: activations not built.
        ValueError: a calibrated kind (its range is a checkpoint's tensor: see ``input_scales``).
    """
    hook = hook_for(scheme)
    return None if hook is None else hook.quantize


def attach_act_quant(
    model: nn.Module, schemes: Mapping[str, Scheme], input_absmax: Mapping[str, torch.Tensor] | None = None
) -> int:
    """Give every layer of ``schemes`` (name -> scheme) that quantizes activations its hook;
    returns how many layers got one. A layer that has one keeps a single hook (replaced).
    ``input_absmax`` (name -> 0-dim range, ``LayerQuant.input_absmax``) holds the range of every
    layer whose activations are calibrated.

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
        ValueError: a calibrated layer missing from ``input_absmax``, naming it.
    """
    ranges = input_absmax or {}
    attached = 0
    for name, scheme in schemes.items():
        if name not in ranges and calibrated_entry(scheme) is not None:
            raise ValueError(
                f"layer {name}: its activations quantize with a calibrated range (input_absmax), "
                f"which it has none of: quantize it with calibration data"
            )
        hook = hook_for(scheme, ranges.get(name))
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
