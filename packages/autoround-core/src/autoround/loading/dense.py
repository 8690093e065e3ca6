"""Unpacking a quantized checkpoint back into an ordinary dense transformers model.

The files are checked first exactly as :func:`~autoround.loading.load_quantized` checks them
(:func:`~autoround.loading.quantized.empty_model`: the spec of the format that reads the config,
the empty packed model, :func:`~autoround.loading.tensor_check.check_checkpoint_tensors`); then
each packed layer is dequantized (AWQ ones repacked into the GPTQ layout first).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from autoround.formats.awq_layout import awq_to_gptq
from autoround.formats.base import CheckpointSpec
from autoround.formats.gptq_layout import unpack_layer
from autoround.io import iter_safetensors_dir
from autoround.layer_quant import dequantize_codes
from autoround.loading.quantized import empty_model
from autoround.loading.tensor_check import PACKED_LEAVES
from autoround.modeling.blocks import is_linear_like, linear_shape
from autoround.modeling.moe import unfuse_experts
from autoround.nn.float_weights import FloatLayout, is_float_type, layout_for
from autoround.nn.float_weights import dequantize as dequantize_float

logger = logging.getLogger(__name__)


def dense_state_dict(
    checkpoint_dir: str | Path, model: nn.Module, spec: CheckpointSpec, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with every packed layer replaced by its dequantized weight.

    The files must have passed :func:`~autoround.loading.tensor_check.check_checkpoint_tensors`.
    """
    packed: dict[str, dict[str, torch.Tensor]] = {}
    floats: dict[str, dict[str, torch.Tensor]] = {}  # Intel's float layouts, by layer
    state: dict[str, torch.Tensor] = {}
    ignored = [re.compile(p) for p in spec.ignored_tensors]
    for key, tensor in iter_safetensors_dir(Path(checkpoint_dir)):
        if any(p.search(key) for p in ignored):
            continue
        module_name, _, leaf = key.rpartition(".")
        if leaf in PACKED_LEAVES:
            packed.setdefault(module_name, {})[leaf] = tensor
        elif leaf != "bias" and _float_layer(spec, model, module_name):
            floats.setdefault(module_name, {})[leaf] = tensor
        else:
            state[key] = tensor
    for name, tensors in packed.items():
        scheme = spec.scheme_for(name)
        assert scheme is not None, f"{name}: the tensor check lets packed tensors only where quantized"
        out_features, in_features = linear_shape(model.get_submodule(name))
        if spec.layout == "awq":
            tensors = awq_to_gptq(tensors, scheme, in_features, out_features, name)
        codes, quant = unpack_layer(tensors, scheme, in_features, out_features, spec.zero_offset, name)
        state[f"{name}.weight"] = dequantize_codes(codes, quant, dtype)
    for name, tensors in floats.items():
        layout = _float_layout(spec, name)
        state[f"{name}.weight"] = dequantize_float(layout.kind, tensors, layout.block).to(dtype)
    for name in [*packed, *floats]:
        if f"{name}.bias" in state:
            state[f"{name}.bias"] = state[f"{name}.bias"].to(dtype)
    return state


def _float_layer(spec: CheckpointSpec, model: nn.Module, name: str) -> bool:
    """Whether ``name`` is a Linear stored in a float layout (a block's norms are not)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return False
    if not is_linear_like(module):
        return False
    scheme = spec.scheme_for(name)
    return scheme is not None and is_float_type(scheme.data_type)


def _float_layout(spec: CheckpointSpec, name: str) -> FloatLayout:
    scheme = spec.scheme_for(name)
    assert scheme is not None, f"{name}: float tensors are collected for quantized layers only"
    layout = layout_for(scheme.data_type, scheme.bits, scheme.group_size, scheme.block_shape)
    assert layout is not None, f"{name}: the tensor check built this layer, so its layout exists"
    return layout


def load_dense(checkpoint_dir: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Build the model of a quantized checkpoint with dense, dequantized weights (on the CPU).

    ``dtype`` defaults to the dtype the checkpoint's config names. A quantized ``lm_head`` gets its
    own dequantized weight, never tied to the embedding. Calibrated activation scales
    (``input_scale``, ``input_global_scale``) are checked but not applied: the dense model's
    layers take their inputs as they are (:func:`~autoround.loading.load_quantized` quantizes them).

    Raises:
        FormatError / CheckpointError: as :func:`~autoround.loading.load_quantized`.
    """
    from transformers import AutoModelForCausalLM  # when a model is built, not on import

    # The reference backend serves every scheme a format stores: the empty packed model is only
    # the specification the files are checked against.
    empty, spec, resolved = empty_model(checkpoint_dir, dtype, backend="torch")
    model = AutoModelForCausalLM.from_config(empty.config, dtype=resolved)
    unfuse_experts(model)  # checkpoints store MoE experts as per-expert Linear layers
    model.load_state_dict(dense_state_dict(checkpoint_dir, model, spec, resolved), strict=False)
    model.tie_weights()
    model.eval()
    logger.info("loaded %s dense (%s)", checkpoint_dir, resolved)
    return model
