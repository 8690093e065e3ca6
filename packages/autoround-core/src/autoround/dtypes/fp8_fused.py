"""The FP8 E4M3 tuning quantize-dequantize as one autograd step with its own backward (as
:mod:`autoround.dtypes.int_fused` is for the integer type and :mod:`autoround.dtypes.float_fused`
for MX and NVFP4).

``out = e4m3_ste(clamp(x / scale + v, -448, 448)) * scale``, Intel's straight-through E4M3
(``(e4m3(y) - y).detach() + y``), for a weight's groups (``v`` the rounding offsets, ``scale`` per
group) and for a static activation (no ``v``, one scale). Through plain autograd it records some
ten weight-sized nodes, and the clamp's backward builds a bool mask and a ``torch.where`` (slow
on CPU: :mod:`autoround.dtypes.float_masks`). Here the forward computes the values of those
operations and the backward applies, in autograd's order and with its float operations, the
derivatives its nodes apply (``mul``: ``grad * other``; ``clamp``: the mask; ``div`` by a
tensor: ``grad / b`` for ``a`` and ``-grad * ((a / b) / b)`` for ``b``), summing what goes to
the broadcast ``scale`` with ``sum_to_size`` as autograd's ``sum_to`` does. So the values and
the gradients are autograd's (and Intel's) bit for bit, up to the sign of zero gradients
(tests/core/dtypes/test_float_tuning.py against Intel's, tests/core/dtypes/test_fp8_fused.py
against autograd's).
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.dtypes.e4m3 import E4M3_MAX, e4m3_values
from autoround.dtypes.float_masks import float_mask


class Fp8QDQ(torch.autograd.Function):
    """``e4m3_ste(clamp(x / scale + v, -448, 448)) * scale`` (float32) with autograd's gradients
    for ``x``, ``v`` and ``scale`` written out."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, v: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scaled = x / scale
            pre = scaled + v if v is not None else scaled
            inside = float_mask(torch.le, pre.abs(), E4M3_MAX)
            clipped = pre.clamp_(-E4M3_MAX, E4M3_MAX)
            # Intel's straight-through value (e4m3(y) - y) + y: the E4M3 value, +0.0 for negative
            # values rounding to zero
            codes = e4m3_values(clipped).sub_(clipped).add_(clipped)
            out = codes * scale
        ctx.save_for_backward(scale, scaled, codes, inside)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        scale, scaled, codes, inside = ctx.saved_tensors
        need_x, need_v, need_scale = ctx.needs_input_grad
        grad_scale = (grad * codes).sum_to_size(scale.shape) if need_scale else None
        grad_pre = (grad * scale).mul_(inside)
        grad_x = grad_pre / scale if need_x else None
        if need_scale and grad_scale is not None:
            grad_scale = grad_scale + (-grad_pre * (scaled / scale)).sum_to_size(scale.shape)
        return grad_x, grad_pre if need_v else None, grad_scale


def fp8_tuning_qdq(x: torch.Tensor, v: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """``e4m3_ste(clamp(x / scale + v, -448, 448)) * scale`` in float32 with straight-through
    gradients (``x`` float32 or bfloat16, ``scale`` float32 broadcasting against ``x``)."""
    return Fp8QDQ.apply(x, v, scale)
