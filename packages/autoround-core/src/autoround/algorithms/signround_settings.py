"""SignRound's settings: Intel auto-round's knobs and defaults, validated on creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from autoround.algorithms import scale_init
from autoround.algorithms.clip_init import CLIP_INITS
from autoround.hardware import autocast_dtype
from autoround.intel_defaults import INTEL


@dataclass(frozen=True)
class SignRoundSettings:
    """Tuning knobs, with Intel auto-round's defaults (:data:`autoround.intel_defaults.INTEL`).
    Validated on creation.

    ``keep_best`` keeps the parameters of the iteration with the lowest loss (Intel's
    ``not_use_best_mse=False``); False keeps the last iteration's.
    """

    iters: int = INTEL.iters
    lr: float | None = INTEL.lr
    minmax_lr: float | None = INTEL.minmax_lr
    batch_size: int = INTEL.batch_size
    gradient_accumulate_steps: int = INTEL.gradient_accumulate_steps
    enable_minmax_tuning: bool = INTEL.enable_minmax_tuning
    keep_best: bool = not INTEL.not_use_best_mse
    enable_quanted_input: bool = INTEL.enable_quanted_input
    seed: int = INTEL.seed
    init_clipping: str = INTEL.init_clipping
    #: Our default differs from Intel's (False): see :mod:`autoround.algorithms.scale_init`.
    enable_alg_ext: bool = INTEL.enable_alg_ext
    #: Intel's name and default: the tuned block's forward and backward run under bf16 autocast,
    #: here only where the device multiplies bf16 natively (:func:`autocast_dtype`).
    amp: bool = INTEL.amp

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "gradient_accumulate_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.iters > 100_000:
            raise ValueError(f"iters={self.iters} is absurd; use at most 100000")
        for name in ("lr", "minmax_lr"):
            value = getattr(self, name)
            if value is not None and not (0 < value <= 10):
                raise ValueError(f"{name} must be in (0, 10], got {value!r}")
        if self.init_clipping not in CLIP_INITS:
            raise ValueError(f"init_clipping must be one of {CLIP_INITS}, got {self.init_clipping!r}")

    def lr_for(self, bits: int) -> float:
        """The rounding lr of a layer: explicit, else Intel's bit-dependent default."""
        if self.lr is not None:
            return self.lr
        return 2.0 / self.iters if self.iters >= 1000 and bits <= 3 else 1.0 / self.iters

    def minmax_lr_for(self, bits: int, from_searched_scale: bool = False) -> float:
        """The clipping-factor lr of a layer: explicit, else its rounding lr (Intel's default),
        a quarter of it for the factor on a searched scale (``scale_init.FACTOR_LR_SHARE``)."""
        if self.minmax_lr is not None:
            return self.minmax_lr
        share = scale_init.FACTOR_LR_SHARE if from_searched_scale else 1.0
        return share * self.lr_for(bits)

    def autocast_dtype(self, device: torch.device | str) -> torch.dtype | None:
        """bf16 when ``amp`` and ``device`` multiplies bf16 natively, else None (float32).

        Only the block's matrix products run in bf16; the tuned parameters, the
        quantize-dequantize, the cached activations, the targets and the loss stay float32. On
        AVX2-only CPUs bf16 products are emulated and several times slower, so they stay float32.
        """
        return autocast_dtype(self.amp, device)


#: Settings a checkpoint leaves out at Intel's default (as Intel's does); ``amp`` is always written.
_OMITTED_AT_DEFAULT = frozenset(
    {
        "batch_size",
        "enable_minmax_tuning",
        "enable_quanted_input",
        "gradient_accumulate_steps",
        "iters",
        "nsamples",
        "seqlen",
    }
)


def checkpoint_settings(
    settings: SignRoundSettings, nsamples: int, seqlen: int, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """The tuning settings a checkpoint's config records (Intel's keys, Intel's defaults left
    out); ``amp`` says whether tuning on ``device`` ran under bf16 autocast."""
    values = {
        "amp": settings.autocast_dtype(device) is not None,
        "batch_size": settings.batch_size,
        "enable_minmax_tuning": settings.enable_minmax_tuning,
        "enable_quanted_input": settings.enable_quanted_input,
        "gradient_accumulate_steps": settings.gradient_accumulate_steps,
        "iters": settings.iters,
        "nsamples": nsamples,
        "seqlen": seqlen,
    }
    recorded: dict[str, Any] = {
        k: v for k, v in values.items() if k not in _OMITTED_AT_DEFAULT or getattr(INTEL, k) != v
    }
    default_lr = 1.0 / settings.iters
    if settings.lr is not None and settings.lr != default_lr:
        recorded["lr"] = settings.lr
    if settings.minmax_lr is not None and settings.minmax_lr != (settings.lr or default_lr):
        recorded["minmax_lr"] = settings.minmax_lr
    return recorded
