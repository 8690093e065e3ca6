"""Calibrated activation scales in checkpoints, the writing side: ``FP8_STATIC``'s
``input_scale`` and NVFP4 W4A4's ``input_global_scale`` computed from each layer's calibrated
largest ``|input|`` (:attr:`~autoround.layer_quant.LayerQuant.input_absmax`, Intel's ``act_max``)
by Intel's formulas (:mod:`autoround.dtypes.act_formulas`), and compressed-tensors'
``input_activations`` arguments for them (which weights pair with them is the activation
registry's rule: :data:`~autoround.dtypes.act_kinds.ACT_KINDS`). Which schemes have one and what
the tensors are called: :mod:`autoround.nn.input_scales`.

* ``"fp8_static"``: ``input_scale = max(absmax / 448, 1 / (448 * 512))``, shape ``(1,)``; Intel's
  ``auto_round`` export holds it in the model's dtype (``FP8QLinear``); compressed-tensors'
  ``FP8`` preset names and shapes it the same (strategy ``tensor``, ``dynamic: false``), and the
  ``llm_compressor`` writer keeps it float32 (exact).
* ``"nvfp4"``: ``input_global_scale = 448 * 6 / absmax``, float32 ``(1,)`` in both formats
  (Intel's ``qlinear_fp``; compressed-tensors' NVFP4 preset: strategy ``tensor_group`` 16,
  ``dynamic: "local"``).
"""

from __future__ import annotations

from typing import Any

import torch

from autoround.errors import FormatError
from autoround.layer_quant import LayerQuant
from autoround.nn.input_scales import (
    INPUT_DTYPES,
    INPUT_TENSORS,
    CalibratedKind,
    calibrated_kind,
    stored_value,
)

#: NVFP4's activation group (its E4M3 block scales, as its weights').
NV_ACT_GROUP = 16


def input_tensors(
    name: str, quant: LayerQuant, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The calibrated activation tensor of layer ``name`` (empty for other schemes), shape ``(1,)``;
    FP8's ``input_scale`` in ``dtype`` (NVFP4's global scale is always float32).

    Raises:
        FormatError: the layer's scheme calibrates activations but ``quant.input_absmax`` is None
            (it was not calibrated), naming the layer and the tensor.
    """
    kind = calibrated_kind(quant.scheme)
    if kind is None:
        return {}
    absmax = quant.input_absmax
    if absmax is None:
        raise FormatError(
            f"{name}: its {INPUT_TENSORS[kind]} needs the layer's calibrated input range "
            f"(LayerQuant.input_absmax), which is None: quantize with calibration data"
        )
    value = stored_value(kind, absmax).to(INPUT_DTYPES[kind] or dtype)
    return {INPUT_TENSORS[kind]: value.reshape(1).cpu().contiguous()}


def ct_input_args(kind: CalibratedKind) -> dict[str, Any]:
    """compressed-tensors' ``input_activations`` of its ``FP8`` / ``NVFP4`` preset, as its
    ``model_dump(mode="json")`` writes them."""
    nv = kind == "nvfp4"
    return {
        "actorder": None,
        "block_structure": None,
        "dynamic": "local" if nv else False,
        "group_size": NV_ACT_GROUP if nv else None,
        "num_bits": 4 if nv else 8,
        "observer": "static_minmax",
        "observer_kwargs": {},
        "scale_dtype": str(torch.float8_e4m3fn) if nv else None,
        "strategy": "tensor_group" if nv else "tensor",
        "symmetric": True,
        "type": "float",
        "zp_dtype": None,
    }
