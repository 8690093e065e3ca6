"""Model-free RTN: quantize a checkpoint's Linear weights tensor by tensor, without the model.

:func:`quantize_model_free` reads the checkpoint shard by shard (``safe_open``, one tensor at a
time), quantizes each planned Linear weight as it is read with the same round-to-nearest and
packing the model-based path uses (:func:`~autoround.layer_quant.quantize_weight`,
:func:`~autoround.formats.gptq_layout.pack_layer`), and writes ``auto_round`` shards as they fill,
``config.json`` with the quantization config the model-based writer produces
(:func:`~autoround.formats.auto_round.quantization_config`), ``quantization_config.json`` and the
source's tokenizer and generation files. Everything is written into a temp directory beside the
output and renamed at the end. Peak memory: one input tensor plus one output shard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from autoround.algorithms.rtn import RTN_RECORDED
from autoround.errors import FormatError, SchemeError, UsageError
from autoround.formats.auto_round import packing_format_for, quantization_config
from autoround.formats.base import ZERO_OFFSET
from autoround.formats.gptq_layout import pack_layer
from autoround.formats.preflight import check_schemes
from autoround.io import DEFAULT_MAX_SHARD_BYTES, atomic_dir
from autoround.layer_plan import LayerConfig
from autoround.layer_quant import quantize_weight
from autoround.model_free.plan import CheckpointPlan, plan_checkpoint
from autoround.model_free.routing import MODEL_FREE_FORMAT, format_problem, model_free_problem
from autoround.model_free.shards import ShardWriter
from autoround.model_free.source import Shard, copy_metadata, read_shards, resolve_source
from autoround.model_sources.loading import check_dense_checkpoint, read_config
from autoround.output_guard import check_output_dir
from autoround.schemes import Scheme, SchemeLike, parse_scheme

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFreeResult:
    """Where the checkpoint was written, and its plan (``plan.layer_plan.quantized()``: the layers)."""

    path: Path
    plan: CheckpointPlan
    files: tuple[str, ...]


def quantize_model_free(
    model: str | Path,
    output_dir: str | Path,
    scheme: SchemeLike | None = "W4A16",
    *,
    layer_config: LayerConfig | None = None,
    ignore_layers: str | Sequence[str] = (),
    quant_lm_head: bool = False,
    format: str = MODEL_FREE_FORMAT,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
    **scheme_overrides: Any,
) -> ModelFreeResult:
    """Quantize the checkpoint ``model`` (local directory, demo alias or Hub id) with RTN into an
    ``auto_round`` checkpoint at ``output_dir``, without building the model.

    The tensors are those :func:`autoround.quantize` (RTN) then :func:`autoround.save` would write
    from the loaded model, bit for bit. ``scheme`` and ``scheme_overrides`` (``bits``,
    ``group_size``, ``sym``) as in :func:`autoround.quantize`; ``ignore_layers``: Intel's
    comma-separated layer names or substrings kept in 16 bits; ``device``: where each weight is
    rounded (default: the CPU); output shards hold at most ``max_shard_bytes`` and one starts
    with each input shard.

    Raises (before anything is read or written, naming the bad value and what is allowed):
        FormatError: a format other than ``auto_round``.
        SchemeError: an unknown scheme, a non-integer one, bits the format cannot store, a plan
            that quantizes nothing or that vLLM's fused layers cannot take.
        UsageError / FileExistsError: an output inside the model, or a non-empty one without
            ``overwrite``.
        CheckpointError: no safetensors weights, a quantized checkpoint, unreadable files.
        UnsupportedLayerError: what this rule cannot quantize correctly (docs/model_free.md).
    """
    chosen = check_request(scheme, format, layer_config, scheme_overrides)
    output = Path(output_dir)
    _check_output(output, overwrite, model)
    source = resolve_source(model)
    check_output_dir(output, {"model": source})
    check_dense_checkpoint(source)
    shards = read_shards(source)
    config = read_config(source)
    plan = plan_checkpoint(shards, config, chosen, layer_config, ignore_layers, quant_lm_head)
    logger.info("model-free RTN of %s: %d layers to quantize", source, len(plan.layer_plan.quantized()))
    with atomic_dir(output, overwrite) as tmp:
        writer = ShardWriter(tmp, max_shard_bytes)
        packing = packing_format_for(chosen)
        for number, shard in enumerate(shards, start=1):
            label = f"{number}/{len(shards)}"
            _quantize_shard(shard, plan, writer, ZERO_OFFSET[packing], device, progress, label)
        files = writer.finish()
        routers = plan.dense_block_matrices
        qconfig = quantization_config(chosen, plan.layer_plan, RTN_RECORDED, routers, packing)
        _write_configs(config, qconfig, tmp)
        copy_metadata(source, tmp)
    return ModelFreeResult(output, plan, tuple(files))


def check_request(
    scheme: SchemeLike | None, format: str, layer_config: LayerConfig | None, overrides: Mapping[str, Any]
) -> Scheme:
    """The scheme of a model-free request, refused (naming the value and what is allowed) when
    the format is not ``auto_round`` or a scheme is not an integer one the format stores."""
    if not isinstance(format, str) or format_problem(format) is not None:
        raise FormatError(
            f"{format_problem(str(format))}; for other formats quantize with the model loaded "
            f"(autoround.quantize + autoround.save, or the CLI with --disable_model_free)"
        )
    chosen = parse_scheme(scheme, **overrides)
    problem = model_free_problem(chosen, format, layer_config)
    if problem is not None:
        raise SchemeError(
            f"{problem}; for other schemes quantize with the model loaded (--disable_model_free)"
        )
    check_schemes(chosen, layer_config, (MODEL_FREE_FORMAT,))
    return chosen


def _check_output(output: Path, overwrite: bool, model: str | Path) -> None:
    """Refuse an output that exists and is not an empty directory (unless ``overwrite``), or that
    is, holds or lies inside a local model, before anything is downloaded."""
    check_output_dir(output, {"model": model if Path(model).expanduser().exists() else None})
    if output.exists() and not output.is_dir():
        raise UsageError(f"output path {output} exists and is not a directory; choose another output")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(
            f"output directory {output} exists and is not empty; pass overwrite=True (--overwrite) "
            f"to replace it"
        )


def _quantize_shard(
    shard: Shard,
    plan: CheckpointPlan,
    writer: ShardWriter,
    zero_offset: int,
    device: str | torch.device | None,
    progress: bool,
    label: str,
) -> None:
    """Every tensor of one input shard, read one at a time, into the writer; then a shard ends."""
    names = [info.name for info in shard.tensors]
    with safe_open(str(shard.path), framework="pt", device="cpu") as handle:
        for name in tqdm(names, desc=f"model-free RTN, shard {label}", unit="tensor", disable=not progress):
            _emit(name, handle.get_tensor(name), plan, writer, zero_offset, device)
    writer.end_shard()


@torch.no_grad()
def _emit(
    name: str,
    tensor: torch.Tensor,
    plan: CheckpointPlan,
    writer: ShardWriter,
    zero_offset: int,
    device: str | torch.device | None,
) -> None:
    """One tensor into the writer: a planned weight quantized and packed (as the model-based RTN
    and writer do), a quantized layer's bias as float16, a dropped one not at all, else as is."""
    if name in plan.dropped:
        return
    if name in plan.fp16_biases:
        writer.add(name, tensor.to(torch.float16))
        return
    if name not in plan.weights:
        writer.add(name, tensor)
        return
    layer, scheme = plan.weights[name]
    work = tensor.to(device) if device is not None else tensor
    qdq, quant = quantize_weight(work, scheme)
    for key, packed in pack_layer(qdq.to("cpu"), quant.cpu(), zero_offset).items():
        writer.add(f"{layer}.{key}", packed)


def _write_configs(config: Mapping[str, Any], qconfig: dict[str, Any], directory: Path) -> None:
    """``config.json`` (the source's, with ``quantization_config``) and ``quantization_config.json``."""
    data = {**config, "quantization_config": qconfig}
    (directory / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (directory / "quantization_config.json").write_text(json.dumps(qconfig, indent=2) + "\n")
