"""FP8 E4M3 rounding, as torch's ``float8_e4m3fn`` cast rounds (nearest, ties to even, saturated
at +-448), and Intel's straight-through form of it; shared by the FP8 weights
(:mod:`autoround.dtypes.fp8`), NVFP4's block scales and the FP8 activation formulas."""

from __future__ import annotations

import torch

from autoround.dtypes.mx_elements import E4M3, binade_power
from autoround.dtypes.ste import Through, forward_only

#: The largest E4M3 magnitude.
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)


def e4m3_values(x: torch.Tensor) -> torch.Tensor:
    """``x.to(torch.float8_e4m3fn).to(x.dtype)``: the nearest E4M3 value (ties to even, beyond
    +-448 saturated, as torch's cast), in ``x``'s dtype.

    For float32 it is computed in float32 arithmetic, three times cheaper on CPU than the two
    casts: each magnitude times ``8 / 2**binade`` (exact: a power of two; binades floored at
    E4M3's smallest normal one, 2**-6, below which the steps are the subnormal 2**-9) rounded
    half to even, divided back, signed as ``x`` (-0.0 included). The same floats as the cast
    (tests/core/dtypes/test_e4m3.py checks every float32 next to an E4M3 value or midpoint).
    """
    if x.dtype != torch.float32:
        return x.to(torch.float8_e4m3fn).to(x.dtype)
    magnitude = x.abs().clamp_(max=E4M3_MAX)
    unit = binade_power(magnitude, E4M3).reciprocal_().mul_(2.0**E4M3.mantissa_bits)
    return magnitude.mul_(unit).round_().div_(unit).copysign_(x)


def e4m3(x: torch.Tensor, through: Through = forward_only) -> torch.Tensor:
    """``x`` rounded to FP8 E4M3 (nearest even), in ``x``'s dtype. Written as Intel's
    straight-through estimator computes it, ``(e4m3(x) - x) + x``, which equals the cast except
    that a negative value rounding to zero gives +0.0; ``through`` says whether the gradient
    passes (:mod:`autoround.dtypes.ste`)."""
    return through(e4m3_values(x), x)
