"""One activation quantize-dequantize for the layers that read the same input.

A decoder block's q / k / v projections read one hidden state and its gate / up projections
another; with the same activation kind (and, for a calibrated kind, the same range, which
theirs is: it was observed on that one input) their quantized inputs are the same tensor. Each
layer quantizing its own copy costs three and two times the work; :class:`LastInput` keeps the
last result and hands it to the next layer that comes with the very same input tensor, unchanged
(its version counter), under the same key and the same grad mode.

The tensor is held by a weak reference, so a freed input never matches a new one at its address;
the result is held until the next input replaces it (one activation's worth of memory). A tensor
made under ``torch.inference_mode`` has no version counter: it is quantized every time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable

import torch


class LastInput:
    """The last ``(input, key) -> result`` of a quantize-dequantize, reused for the same input."""

    def __init__(self) -> None:
        self._input: weakref.ref[torch.Tensor] | None = None
        self._version = -1
        self._key: Hashable = None
        self._result: torch.Tensor | None = None

    def get(
        self, x: torch.Tensor, key: Hashable, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``compute(x)``, or the result kept from the last call when ``x`` is the same tensor at
        the same version and ``key`` (the kind, its group and range) and the grad mode match."""
        if x.is_inference():  # no version counter: a change in place could not be seen
            return compute(x)
        full_key = (key, torch.is_grad_enabled())
        if (
            self._result is not None
            and self._input is not None
            and self._input() is x
            and self._version == x._version
            and self._key == full_key
        ):
            return self._result
        result = compute(x)
        self._input, self._version, self._key, self._result = weakref.ref(x), x._version, full_key, result
        return result

    def clear(self) -> None:
        """Forget the kept result (and the input it came from)."""
        self._input, self._version, self._key, self._result = None, -1, None, None


#: The one memo of the in-memory model's activation hooks and of SignRound's tuning forward:
#: the layers reading one input run one after another, so the last result is all there is to keep.
LAST_INPUT = LastInput()


def range_key(absmax: torch.Tensor | None) -> float | None:
    """A calibrated range as part of a memo key (its value: q, k and v hold equal ranges in
    tensors of their own); None for a dynamic kind."""
    return None if absmax is None else float(absmax.detach().reshape(()).item())
