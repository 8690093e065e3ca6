"""Unpacking a quantized checkpoint back into an ordinary dense transformers model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from autoround.errors import CheckpointError
from autoround.formats.auto_round import CheckpointSpec, read_spec
from autoround.formats.gptq_layout import unpack_layer
from autoround.formats.loading import checkpoint_config
from autoround.io import iter_safetensors_dir
from autoround.modeling.blocks import linear_shape
from autoround.modeling.moe import unfuse_experts
from autoround.quantizer import dequantize_codes

logger = logging.getLogger(__name__)
_PACKED = ("qweight", "qzeros", "scales")


def dense_state_dict(
    checkpoint_dir: str | Path, model: nn.Module, spec: CheckpointSpec, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with every packed layer replaced by its dequantized weight."""
    packed: dict[str, dict[str, torch.Tensor]] = {}
    state: dict[str, torch.Tensor] = {}
    for key, tensor in iter_safetensors_dir(Path(checkpoint_dir)):
        module_name, _, leaf = key.rpartition(".")
        if leaf in _PACKED:
            packed.setdefault(module_name, {})[leaf] = tensor
        else:
            state[key] = tensor
    for name, tensors in packed.items():
        scheme = spec.scheme_for(name)
        if scheme is None:
            raise CheckpointError(
                f"{name} holds packed tensors but quantization_config leaves it unquantized"
            )
        out_features, in_features = linear_shape(model.get_submodule(name))
        codes, quant = unpack_layer(tensors, scheme, in_features, out_features, spec.zero_offset, name)
        state[f"{name}.weight"] = dequantize_codes(codes, quant, dtype)
        if f"{name}.bias" in state:
            state[f"{name}.bias"] = state[f"{name}.bias"].to(dtype)
    return state


def load_dense(checkpoint_dir: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Build the model of a quantized checkpoint with dense, dequantized weights (on the CPU).

    ``dtype`` defaults to the dtype the checkpoint's config names. A quantized ``lm_head`` gets its
    own dequantized weight, never tied to the embedding.
    """
    spec = read_spec(checkpoint_dir)
    config = checkpoint_config(checkpoint_dir, spec)
    dtype = dtype or getattr(config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    unfuse_experts(model)  # checkpoints store MoE experts as per-expert Linear layers
    state = dense_state_dict(checkpoint_dir, model, spec, dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint_dir}: tensors missing from the checkpoint {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    model.eval()
    logger.info("loaded %s dense (%s)", checkpoint_dir, dtype)
    return model
