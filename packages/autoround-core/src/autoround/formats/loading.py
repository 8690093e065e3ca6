"""Load a quantized checkpoint into a model whose quantized layers stay packed (:class:`QuantLinear`).

The model is built from ``config.json`` with empty (meta) parameters, its quantized Linears are
replaced by empty QuantLinears, and the checkpoint's tensors are assigned in place one at a time,
so no dense weight of a quantized layer is ever materialized. Every packed tensor's shape is
checked against the config before it is used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from autoround.errors import CheckpointError
from autoround.formats.auto_round import read_spec
from autoround.formats.gptq_layout import expected_shapes
from autoround.io import iter_safetensors_dir
from autoround.nn import QuantLinear, replace_linears

logger = logging.getLogger(__name__)


def load_quantized(
    checkpoint_dir: str | Path,
    dtype: torch.dtype | None = None,
    backend: str | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The checkpoint's model, quantized layers packed and prepared for their backend.

    ``dtype`` (default: the config's) is the dtype of the unquantized tensors and of the
    activations; ``backend`` forces one for every quantized layer (see
    :func:`autoround.backends.select`).

    Raises:
        CheckpointError: a packed tensor whose shape disagrees with config.json (naming the layer
            and both shapes), a missing or unexpected tensor, or any error of
            :func:`autoround.io.iter_safetensors_dir`.
        ValueError / UnsupportedLayerError: from backend selection.
    """
    spec = read_spec(checkpoint_dir)
    config = AutoConfig.from_pretrained(checkpoint_dir)
    del config.quantization_config
    dtype = _resolve_dtype(dtype or getattr(config, "dtype", None))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    replace_linears(model, spec, backend=backend, device="meta", target_device=device)
    _assign_tensors(model, Path(checkpoint_dir), dtype)
    model.tie_weights()
    _check_materialized(model, Path(checkpoint_dir))
    model.to(device)
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.prepare()
    model.eval()
    logger.info("loaded %s packed (%s, device %s)", checkpoint_dir, dtype, device)
    return model


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _assign_tensors(model: nn.Module, directory: Path, dtype: torch.dtype) -> None:
    """Put every checkpoint tensor in place of its empty twin (packed ones checked and kept as stored)."""
    modules = dict(model.named_modules())
    for key, tensor in iter_safetensors_dir(directory):
        module_name, _, leaf = key.rpartition(".")
        module = modules.get(module_name)
        if module is None or not _has_tensor(module, leaf):
            raise CheckpointError(
                f"{directory}: tensor {key} has no place in the model {type(model).__name__}"
            )
        if isinstance(module, QuantLinear):
            _check_packed(module, module_name, leaf, tensor)
        elif tensor.is_floating_point():
            tensor = tensor.to(dtype)
        _put(module, leaf, tensor)


def _has_tensor(module: nn.Module, leaf: str) -> bool:
    return leaf in module._parameters or leaf in module._buffers


def _check_packed(layer: QuantLinear, name: str, leaf: str, tensor: torch.Tensor) -> None:
    shapes = expected_shapes(layer.scheme, layer.in_features, layer.out_features)
    expected = shapes.get(leaf, (layer.out_features,))
    if tuple(tensor.shape) != expected:
        raise CheckpointError(
            f"{name}.{leaf} has shape {tuple(tensor.shape)}, but config.json's scheme "
            f"(bits={layer.scheme.bits}, group_size={layer.scheme.group_size}) and the layer size "
            f"({layer.out_features}x{layer.in_features}) need {expected}"
        )


def _put(module: nn.Module, leaf: str, tensor: torch.Tensor) -> None:
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor


def _check_materialized(model: nn.Module, directory: Path) -> None:
    missing = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if missing:
        raise CheckpointError(f"{directory}: tensors missing from the checkpoint {missing[:5]}")
