"""Load a quantized checkpoint into a model whose quantized layers stay packed (:class:`QuantLinear`).

The model is built from ``config.json`` with empty (meta) parameters, its MoE experts unfused
into the per-expert Linears checkpoints store, its quantized Linears replaced by empty
QuantLinears; every tensor of the files is checked against that empty model from the
safetensors headers (:func:`~autoround.formats.tensor_check.check_checkpoint_tensors`, the check
autoround-hf runs too), then assigned in place one at a time, so no dense weight of a quantized
layer is ever materialized. A tied layer the checkpoint stores quantized
(``lm_head`` of a tied model) is never tied back to the embedding, whatever ``config.json`` says.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from autoround.formats.auto_round import CheckpointSpec, read_spec, tie_configs, tied_layers
from autoround.formats.tensor_check import check_checkpoint_tensors, read_headers
from autoround.io import iter_safetensors_dir, weight_file_paths
from autoround.modeling.moe import unfuse_experts
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
        CheckpointError: a missing, unexpected or misshapen tensor, a packed one of the wrong
            dtype (see :func:`~autoround.formats.tensor_check.check_checkpoint_tensors`), or any
            error of :func:`autoround.io.iter_safetensors_dir`.
        ValueError / UnsupportedLayerError: from backend selection.
    """
    spec = read_spec(checkpoint_dir)
    config = checkpoint_config(checkpoint_dir, spec)
    dtype = _resolve_dtype(dtype or getattr(config, "dtype", None))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    unfuse_experts(model)
    replace_linears(model, spec, backend=backend, device="meta", target_device=device)
    check_checkpoint_tensors(model, read_headers(weight_file_paths(Path(checkpoint_dir))))
    _assign_tensors(model, Path(checkpoint_dir), dtype)
    model.tie_weights()
    model.to(device)
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.prepare()
    model.eval()
    logger.info("loaded %s packed (%s, device %s)", checkpoint_dir, dtype, device)
    return model


def checkpoint_config(checkpoint_dir: str | Path, spec: CheckpointSpec) -> PretrainedConfig:
    """``config.json`` without its quantization_config, untied if a tied layer is stored quantized.

    A quantized ``lm_head`` has no dense weight to share with the embedding; checkpoints we write
    say ``tie_word_embeddings: false`` then, and this also covers ones that do not.
    """
    config = AutoConfig.from_pretrained(checkpoint_dir)
    del config.quantization_config
    configs = tie_configs(config)
    if not any(c.tie_word_embeddings for c in configs):
        return config
    with init_empty_weights(include_buffers=False):
        empty = AutoModelForCausalLM.from_config(config)
    quantized = sorted(name for name in tied_layers(empty) if spec.scheme_for(name) is not None)
    if quantized:
        logger.info("%s: %s stored quantized, loaded untied from the embedding", checkpoint_dir, quantized)
        for c in configs:
            c.tie_word_embeddings = False
    return config


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _assign_tensors(model: nn.Module, directory: Path, dtype: torch.dtype) -> None:
    """Put every checkpoint tensor in place of its empty twin (packed ones kept as stored)."""
    modules = dict(model.named_modules())
    for key, tensor in iter_safetensors_dir(directory):
        module_name, _, leaf = key.rpartition(".")
        module = modules[module_name]
        if not isinstance(module, QuantLinear) and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        _put(module, leaf, tensor)


def _put(module: nn.Module, leaf: str, tensor: torch.Tensor) -> None:
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor
