"""Activation quantization while SignRound tunes a block (W8A8, and any other built activation kind).

As Intel 0.16.1 does it (``auto_round/wrapper.py``): ``WrapperLinear.forward`` quantize-dequantizes
each tuned layer's input with its scheme's activation function before the product with the
tuning weight; after tuning, the layer is unwrapped into a ``WrapperWALayer`` that quantizes its
input the same way, so the outputs that become the next block's inputs
(``enable_quanted_input``) come from a block with quantized weights *and* activations. The
block's target stays the unquantized block's output on unquantized inputs.

Here :class:`~autoround.algorithms.signround.TunedLinear` applies :func:`input_quantizer`'s
function in its forward, and :func:`quantized_inputs` gives a block's plain layers forward
pre-hooks for the forwards after tuning (the losses reported, the next block's inputs, a resumed
block's replay). The kind and its group size come from the scheme as the in-memory model's hooks
take them (:func:`~autoround.dtypes.activations.activation_args`, ``act_group_size`` for a kind
whose grouping is the scheme's), the values from
:func:`~autoround.dtypes.activations.qdq_activation`: every kind the registry builds is tuned.

The gradient is the identity (straight through); the values are exactly ``qdq_activation``'s.
Intel's tuning functions (``int_sym``, ``fp8_sym``) give the same values and, through
``round_ste`` and a straight-through float8 cast, the identity to every element too, plus a term
through the dynamic scale ``s``: ``(q_i - x_i / s) * ds/dx_j``, non-zero only at each token's
largest-magnitude element ``j`` (per group or MX block for those kinds); and nothing at an
element their clamp clips (int8: a token's extreme of the other sign within half a step of the
largest magnitude rounds to +128, clamped to 127). Both need each kind's scale formula, which the
activation functions do not expose; they are left out. Checked against Intel's per-token
functions (tests/fixtures/intel/act_tuning.safetensors): the same values, the same gradient off
each token's largest element and int8's clipped ones.

A calibrated kind (static FP8, NVFP4's activations) quantizes with the layer's calibrated range
(:mod:`autoround.algorithms.act_calibration`). Static FP8 tunes a factor on it, as Intel's
``WrapperLinear`` tunes ``act_max_scale`` (one float32 per layer, starting at 1, kept in [0, 1],
learning at the clipping factors' rate and only with them): its forward is the kind's ``tuning``
formula, Intel's ``quant_fp8_sym`` with ``tensor_max`` and its gradients exactly (straight through
the E4M3 cast, none at a clipped element, the factor's through the scale). NVFP4's takes no
factor (Intel's ``nv_fp4_with_static_gs`` ignores ``max_scale``) and goes straight through.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from autoround.dtypes.act_kinds import ACT_KINDS, ActKindEntry
from autoround.dtypes.activations import activation_args, qdq_activation
from autoround.dtypes.shared_input import LAST_INPUT, range_key
from autoround.schemes import Scheme

Qdq = Callable[[torch.Tensor], torch.Tensor]


class _StraightThrough(torch.autograd.Function):
    """``qdq(x)`` forward, the incoming gradient unchanged backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, qdq: Qdq) -> torch.Tensor:
        return qdq(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through(x: torch.Tensor, qdq: Qdq) -> torch.Tensor:
    """``qdq(x)``, with the identity as its gradient with respect to ``x``."""
    result: torch.Tensor = _StraightThrough.apply(x, qdq)
    return result


def input_quantizer(
    scheme: Scheme, absmax: torch.Tensor | None = None, range_factor: torch.Tensor | None = None
) -> Qdq | None:
    """The tuning forward's quantize-dequantize of a layer's input under ``scheme``; None for a
    weight-only scheme. ``absmax``: the layer's calibrated range, for a calibrated kind;
    ``range_factor``: its tuned factor (None: 1).

    Raises:
        NotImplementedError: the scheme quantizes activations in a way not built.
        ValueError: a calibrated kind without ``absmax``.
    """
    args = activation_args(scheme)
    if args is None:
        return None
    kind, group = args
    entry = ACT_KINDS[kind]
    if entry.calibrated is not None:
        if absmax is None:
            raise ValueError(
                f"activation kind {kind!r} quantizes with the layer's calibrated range: pass absmax"
            )
        return _calibrated(entry, absmax, 1.0 if range_factor is None else range_factor)

    def qdq(x: torch.Tensor) -> torch.Tensor:
        return qdq_activation(x, kind, group)

    return _shared(("tuning", kind, group, None), functools.partial(straight_through, qdq=qdq))


def _shared(key: tuple[object, ...], quantize: Qdq) -> Qdq:
    """``quantize``, its result shared by the layers that read the same input (q / k / v, gate /
    up; :mod:`autoround.dtypes.shared_input`): one straight-through node, whose gradient autograd
    sums over the readers as it would over their copies."""

    def shared(x: torch.Tensor) -> torch.Tensor:
        return LAST_INPUT.get(x, key, quantize)

    return shared


def _calibrated(entry: ActKindEntry, absmax: torch.Tensor, factor: torch.Tensor | float) -> Qdq:
    """A calibrated kind's tuning forward: its own gradients where it has them, else straight
    through."""
    formula = entry.tuning if entry.tuning is not None else entry.calibrated
    assert formula is not None  # the caller checked that the kind is calibrated

    def qdq(x: torch.Tensor) -> torch.Tensor:
        return formula(x, absmax, factor)[0]

    if entry.tuning is not None:  # a tuned factor per layer: nothing to share
        return qdq
    return _shared(
        ("tuning", entry.name, None, range_key(absmax)), functools.partial(straight_through, qdq=qdq)
    )


@contextlib.contextmanager
def quantized_inputs(
    block: nn.Module, layers: Mapping[str, Scheme], input_absmax: Mapping[str, torch.Tensor] | None = None
) -> Iterator[int]:
    """Within the context, each layer of ``layers`` (names relative to ``block``) whose scheme
    quantizes activations has its input quantize-dequantized (a forward pre-hook, removed on
    exit); a calibrated layer with its range from ``input_absmax`` (names as in ``layers``).
    Yields how many layers got one.

    Raises:
        NotImplementedError: a scheme whose activation quantization is not built.
        ValueError: a calibrated layer missing from ``input_absmax``.
    """
    ranges = input_absmax or {}
    handles = []
    try:
        for name, scheme in layers.items():
            quantize = input_quantizer(scheme, ranges.get(name))
            if quantize is not None:
                hook = functools.partial(_quantize_first, quantize)
                handles.append(block.get_submodule(name).register_forward_pre_hook(hook))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def _quantize_first(quantize: Qdq, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    return (quantize(args[0]), *args[1:])
