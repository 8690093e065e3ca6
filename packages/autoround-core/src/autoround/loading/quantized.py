"""Load a quantized checkpoint into a model whose quantized layers stay packed (:class:`QuantLinear`).

The checkpoint's ``quantization_config`` becomes a spec through the format that reads it
(:func:`autoround.formats.spec_for`: auto-round, GPTQ, AWQ). The model is built from
``config.json`` with empty (meta) parameters, its MoE experts unfused into the per-expert
Linears checkpoints store, its quantized Linears replaced by empty QuantLinears in the layout
stored on disk; every tensor of the files is checked against that empty model from the
safetensors headers (:func:`~autoround.loading.tensor_check.check_checkpoint_tensors`, the check
autoround-hf runs too), then assigned in place one at a time, so no dense weight of a quantized
layer is ever materialized. AWQ layers are repacked into the GPTQ layout once, after assignment.
A tied layer the checkpoint stores quantized (``lm_head`` of a tied model) is never tied back to
the embedding, whatever ``config.json`` says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from autoround.formats.awq_layout import convert_layer, expect_awq
from autoround.formats.base import CheckpointSpec
from autoround.formats.checkpoint import tie_configs, tied_layers
from autoround.formats.registry import checkpoint_spec
from autoround.io import iter_safetensors_dir, weight_file_paths
from autoround.loading.tensor_check import check_checkpoint_tensors, read_headers
from autoround.modeling.blocks import find_block_names
from autoround.modeling.moe import unfuse_experts
from autoround.nn import FloatQuantLinear, QuantLinear, replace_linears

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

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
        FormatError: no format reads the checkpoint's ``quantization_config``.
        CheckpointError: a config the format refuses, a missing, unexpected or misshapen tensor,
            a packed one of the wrong dtype (see
            :func:`~autoround.loading.tensor_check.check_checkpoint_tensors`), or any error of
            :func:`autoround.io.iter_safetensors_dir`.
        ValueError / UnsupportedLayerError: from backend selection.
    """
    model, spec, dtype = empty_model(checkpoint_dir, dtype, backend, device)
    _assign_tensors(model, Path(checkpoint_dir), dtype, spec.ignored_tensors)
    cast("PreTrainedModel", model).tie_weights()  # built by from_config: a transformers model
    if spec.layout == "awq":
        for name, module in model.named_modules():
            if isinstance(module, QuantLinear):
                convert_layer(module, name)
    model.to(device)
    for module in model.modules():
        if isinstance(module, QuantLinear | FloatQuantLinear):
            module.prepare()
    model.eval()
    logger.info("loaded %s packed (%s, device %s)", checkpoint_dir, dtype, device)
    return model


def empty_model(
    checkpoint_dir: str | Path,
    dtype: torch.dtype | None = None,
    backend: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, CheckpointSpec, torch.dtype]:
    """The checkpoint's model on meta, ready for its tensors, checked against the files' headers.

    Returns the model (quantized Linears replaced by empty QuantLinears in the stored layout,
    backends chosen for ``device``), the spec (blocks filled in from the model when the config
    names none) and the resolved dtype.
    """
    from accelerate import init_empty_weights  # with transformers: when a model is built, not on import
    from transformers import AutoModelForCausalLM

    spec = checkpoint_spec(checkpoint_dir)
    config = checkpoint_config(checkpoint_dir, spec)
    resolved = _resolve_dtype(dtype or getattr(config, "dtype", None))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=resolved)
    unfuse_experts(model)  # checkpoints store MoE experts as per-expert Linear layers
    if not spec.block_names:
        spec = spec.with_default_blocks(find_block_names(model))
    names = replace_linears(model, spec, backend=backend, device="meta", target_device=device)
    if spec.layout == "awq":
        for name in names:
            expect_awq(model.get_submodule(name))
    headers = read_headers(weight_file_paths(Path(checkpoint_dir)))
    check_checkpoint_tensors(model, headers, spec.ignored_tensors)
    return model, spec, resolved


def checkpoint_config(checkpoint_dir: str | Path, spec: CheckpointSpec) -> PretrainedConfig:
    """``config.json`` without its quantization_config, untied if a tied layer is stored quantized.

    A quantized ``lm_head`` has no dense weight to share with the embedding; checkpoints we write
    say ``tie_word_embeddings: false`` then, and this also covers ones that do not.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

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


def _assign_tensors(model: nn.Module, directory: Path, dtype: torch.dtype, ignored: Sequence[str]) -> None:
    """Put every checkpoint tensor in place of its empty twin (packed ones kept as stored)."""
    modules = dict(model.named_modules())
    skip = [re.compile(p) for p in ignored]
    for key, tensor in iter_safetensors_dir(directory):
        if any(p.search(key) for p in skip):
            continue
        module_name, _, leaf = key.rpartition(".")
        module = modules[module_name]
        # a float layer's codes and scales are kept as stored too (an FP8 weight is floating point)
        if not isinstance(module, QuantLinear | FloatQuantLinear) and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        _put(module, leaf, tensor)


def _put(module: nn.Module, leaf: str, tensor: torch.Tensor) -> None:
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor
