"""Calibrated activation scales of a layer, as stored beside its weight: which schemes have one
(:func:`calibrated_kind`), the stored tensor's name, and the calibrated range it stands for.

``FP8_STATIC`` (FP8 E4M3 activations with one static scale per tensor) stores ``input_scale``
(``absmax / 448``); NVFP4 W4A4 (``act_data_type="nv_fp4_with_static_gs"``: E4M3 scales per 16
features computed per forward, relative to a calibrated global scale) stores
``input_global_scale`` (``448 * 6 / absmax``). Both are one value, shape ``(1,)``. Writers
compute them from :attr:`~autoround.layer_quant.LayerQuant.input_absmax`
(:mod:`autoround.formats.act_scales`); loaders turn them back into that range
(:func:`absmax_of`), which the calibrated kind's formula
(:data:`~autoround.dtypes.act_kinds.ACT_KINDS`) quantizes a loaded layer's inputs with, as the
in-memory model's hooks do.
"""

from __future__ import annotations

from typing import Literal, cast

import torch

from autoround.dtypes.act_formulas import E2M1_MAX, E4M3_MAX, fp8_static_input_scale, nvfp4_input_global_scale
from autoround.dtypes.activations import activation_problem, calibrated_entry
from autoround.schemes import Scheme

CalibratedKind = Literal["fp8_static", "nvfp4"]
#: The stored tensor of each calibrated kind (kinds of :data:`~autoround.dtypes.act_kinds.ACT_KINDS`).
INPUT_TENSORS: dict[CalibratedKind, str] = {"fp8_static": "input_scale", "nvfp4": "input_global_scale"}
#: The stored tensor's dtype where it is fixed (None: any float dtype, the model's).
INPUT_DTYPES: dict[CalibratedKind, torch.dtype | None] = {"fp8_static": None, "nvfp4": torch.float32}


def calibrated_kind(scheme: Scheme) -> CalibratedKind | None:
    """The calibrated activation kind of ``scheme``: None for weight-only schemes, dynamic
    activations and activations not built (:func:`~autoround.dtypes.activations.activation_problem`
    says why)."""
    if scheme.is_weight_only or activation_problem(scheme) is not None:
        return None
    entry = calibrated_entry(scheme)
    return cast(CalibratedKind, entry.name) if entry is not None and entry.name in INPUT_TENSORS else None


def input_tensor_name(scheme: Scheme) -> str | None:
    """The stored activation tensor of a layer quantized with ``scheme`` (None: it stores none)."""
    kind = calibrated_kind(scheme)
    return None if kind is None else INPUT_TENSORS[kind]


def stored_value(kind: CalibratedKind, absmax: torch.Tensor) -> torch.Tensor:
    """What a calibrated range is stored as (0-dim float32): Intel's formulas
    (:func:`~autoround.dtypes.act_formulas.fp8_static_input_scale`,
    :func:`~autoround.dtypes.act_formulas.nvfp4_input_global_scale`)."""
    formula = fp8_static_input_scale if kind == "fp8_static" else nvfp4_input_global_scale
    return formula(absmax.reshape(()).to(torch.float32))


def absmax_of(kind: CalibratedKind, stored: torch.Tensor) -> torch.Tensor:
    """The calibrated range a stored ``input_scale`` / ``input_global_scale`` stands for (0-dim
    float32): the one whose :func:`stored_value` is the stored value exactly, where one of
    ``input_scale * 448`` (``448 * 6 / input_global_scale``) and its two float32 neighbours is,
    else that first guess."""
    target = stored.reshape(()).to(torch.float32)
    guess = target * E4M3_MAX if kind == "fp8_static" else (E4M3_MAX * E2M1_MAX) / target
    inf = torch.tensor(float("inf"))
    for candidate in (guess, torch.nextafter(guess, inf), torch.nextafter(guess, -inf)):
        if torch.equal(stored_value(kind, candidate), target):
            return candidate
    return guess
