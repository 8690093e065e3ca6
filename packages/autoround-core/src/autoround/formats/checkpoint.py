"""Writing a checkpoint directory, whatever the format: the parts every writer shares.

A format supplies its ``quantization_config`` and the tensors of one quantized layer
(:data:`LayerTensors`); :func:`write_checkpoint` adds the model's unquantized tensors (tied
weights written once), shards them with :func:`autoround.io.save_safetensors_sharded`, and writes
``config.json`` (with the ``quantization_config``), ``quantization_config.json``, the generation
config and the tokenizer. A tied ``lm_head`` that is quantized is stored untied (its embedding
dense, ``tie_word_embeddings: false``). A model loaded block by block (``low_cpu_mem_usage``) is
walked part by part (:func:`autoround.model_sources.blockwise.resident_parts`), each block in
memory only while its tensors are taken, and each part's tensors are spilled to a file as they
are made; the weight files are assembled from those (:mod:`autoround.formats.streamed`) and are
the same, byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from tqdm.auto import tqdm

from autoround.formats.streamed import PartSpill, write_sharded
from autoround.io import DEFAULT_MAX_SHARD_BYTES, save_safetensors_sharded
from autoround.layer_quant import LayerQuant
from autoround.modeling.blocks import linear_weight
from autoround.quantized_model import QuantizedModel

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: ``(layer name, quantize-dequantized (out, in) weight on the CPU, its parameters)`` -> the
#: layer's tensors by suffix (``qweight``, ...). The bias is added by :func:`write_checkpoint`.
LayerTensors = Callable[[str, torch.Tensor, LayerQuant], dict[str, torch.Tensor]]


def write_checkpoint(
    qm: QuantizedModel,
    directory: Path,
    quant_config: dict[str, Any],
    layer_tensors: LayerTensors,
    *,
    export_dtype: torch.dtype | None = None,
    bias_dtype: torch.dtype | None = torch.float16,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """Write ``qm`` into the existing, empty ``directory``.

    ``export_dtype`` (Intel's GPTQ and AWQ exports: float16): float32 tensors outside the
    quantized layers are cast to it and ``config.json`` states it as the model's dtype; bf16
    tensors keep their dtype, as Intel's exporter leaves them. Biases of quantized layers are
    float16 (the packed layers' dtype).
    """
    untie = tied_quantized(qm.model, qm.layers)
    if untie:
        logger.info("%s is tied to the embedding and quantized: saved untied", untie)
    from autoround.model_sources.blockwise import source_of  # imports transformers: on use

    parts = _part_tensors(qm, layer_tensors, export_dtype, bias_dtype)
    if source_of(qm.model) is None:  # held whole: one part
        dense, packed = next(parts)
        parts.close()
        save_safetensors_sharded(_ordered(qm, dense, packed), directory, max_shard_bytes=max_shard_bytes)
    else:
        _write_streamed(qm, parts, directory, max_shard_bytes)
    write_configs(qm, directory, quant_config, bool(untie))
    if export_dtype is not None and export_dtype != _model_dtype(qm.model):
        _state_dtype(directory / "config.json", export_dtype)


def _write_streamed(
    qm: QuantizedModel, parts: Generator[tuple[Tensors, Tensors]], directory: Path, max_shard_bytes: int
) -> None:
    """A block-wise model's weight files (``low_cpu_mem_usage``): each part's tensors spilled to
    a file of their own as the part is walked, then the files assembled from those: the packed
    tensors of all blocks are never in memory together. The files are the normal path's."""
    spill = PartSpill(directory / ".autoround-parts")
    try:
        dense: list[str] = []
        packed: list[str] = []
        for part_dense, part_packed in parts:
            spill.add({**part_dense, **part_packed})
            dense += part_dense
            packed += part_packed
        order = _ordered(qm, dict.fromkeys(dense), dict.fromkeys(packed))
        write_sharded({name: spill.tensors[name] for name in order}, directory, max_shard_bytes)
    finally:
        spill.close()


Tensors = dict[str, torch.Tensor]


def _part_tensors(
    qm: QuantizedModel,
    layer_tensors: LayerTensors,
    export_dtype: torch.dtype | None,
    bias_dtype: torch.dtype | None,
) -> Generator[tuple[Tensors, Tensors]]:
    """The checkpoint's tensors part by part, ``(dense, packed)``: once for a model held whole; a
    block-wise one (``low_cpu_mem_usage``) is walked part by part, each block's weights in
    memory only while its tensors are taken."""
    from autoround.model_sources.blockwise import resident_parts

    taken: set[str] = set()  # names an earlier part gave (tied aliases it dropped included)
    with tqdm(total=len(qm.layers), desc="packing", unit="layer") as bar:
        for _ in resident_parts(qm.model):
            dense = dense_tensors(qm, export_dtype, skip=taken)
            packed = dict(_packed_tensors(qm, layer_tensors, bias_dtype, bar))
            taken.update(k for k, t in qm.model.state_dict().items() if not t.is_meta)
            yield dense, packed


def _ordered(qm: QuantizedModel, dense: dict[str, _T], packed: dict[str, _T]) -> dict[str, _T]:
    """The checkpoint's order: the dense tensors in the state dict's order, then the packed
    layers' in the plan's (each layer's tensors in the order its packing gave them)."""
    order = [*qm.model.state_dict(), *qm.layers]
    dense = {k: dense[k] for k in order if k in dense}
    prefixes = {name: i for i, name in enumerate(qm.layers)}
    packed = dict(sorted(packed.items(), key=lambda item: prefixes[item[0].rpartition(".")[0]]))
    return {**dense, **packed}


def _packed_tensors(
    qm: QuantizedModel, layer_tensors: LayerTensors, bias_dtype: torch.dtype | None, bar: Any
) -> Iterator[tuple[str, torch.Tensor]]:
    """The packed tensors of the quantized layers whose weights are in memory."""
    for name, quant in qm.layers.items():
        module = qm.model.get_submodule(name)
        if linear_weight(module).is_meta:
            continue
        bar.update()
        weight = linear_weight(module).detach().cpu()
        for key, tensor in layer_tensors(name, weight, quant).items():
            yield f"{name}.{key}", tensor
        bias = getattr(module, "bias", None)
        if bias is not None:
            bias = bias.detach().cpu()
            yield f"{name}.bias", bias if bias_dtype is None else bias.to(bias_dtype)


def dense_tensors(
    qm: QuantizedModel, export_dtype: torch.dtype | None = None, skip: set[str] | None = None
) -> dict[str, torch.Tensor]:
    """Unquantized tensors in memory (not on meta, not named in ``skip``), with later aliases of
    one storage (tied weights) dropped; float32 ones cast to ``export_dtype`` when given (except
    modules the model keeps in float32)."""
    skip = {*(skip or ()), *(f"{name}.{p}" for name in qm.layers for p in ("weight", "bias"))}
    keep_fp32 = _kept_in_fp32(qm.model)
    seen: set[tuple[int, int | torch.SymInt]] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in qm.model.state_dict().items():
        if key in skip or tensor.is_meta:
            continue
        ident = _ident(tensor)
        if ident in seen:
            continue
        seen.add(ident)
        tensor = tensor.detach().cpu().contiguous()
        narrow = export_dtype is not None and tensor.dtype == torch.float32
        if narrow and not any(module in key for module in keep_fp32):
            tensor = tensor.to(export_dtype)
        out[key] = tensor
    return out


def _kept_in_fp32(model: torch.nn.Module) -> set[str]:
    names: set[str] = set()
    for attribute in ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict"):
        value = getattr(model, attribute, None) or []
        names.update([value] if isinstance(value, str) else value)
    return names


def _model_dtype(model: torch.nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _state_dtype(config_path: Path, dtype: torch.dtype) -> None:
    """``config.json`` states ``dtype`` (and the older ``torch_dtype``), as Intel's exporter does."""
    data = json.loads(config_path.read_text())
    name = str(dtype).removeprefix("torch.")
    data["torch_dtype"] = name
    if "dtype" in data:
        data["dtype"] = name
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def tie_configs(config: Any) -> list[Any]:
    """The configs that carry ``tie_word_embeddings``: the model's and its text config's.

    transformers 5 ties by the outer config, but composite models (``text_config``) saved by
    older versions keep the flag inside, and loading copies a True from there to the outer one.
    """
    found = [config]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text) and get_text(decoder=True) is not config:
        found.append(get_text(decoder=True))
    return [c for c in found if hasattr(c, "tie_word_embeddings")]


@contextmanager
def untied(config: Any) -> Iterator[None]:
    """``tie_word_embeddings`` False on ``config`` (and its text config) inside; restored after."""
    configs = tie_configs(config)
    previous = [c.tie_word_embeddings for c in configs]
    for c in configs:
        c.tie_word_embeddings = False
    try:
        yield
    finally:
        for c, value in zip(configs, previous, strict=True):
            c.tie_word_embeddings = value


def tied_layers(model: torch.nn.Module) -> set[str]:
    """Modules on either side of transformers' tied-weights mapping (``lm_head``, the embedding)."""
    mapping = getattr(model, "all_tied_weights_keys", None) or {}
    return {key.rpartition(".")[0] for pair in mapping.items() for key in pair}


def tied_quantized(model: torch.nn.Module, quantized: Iterable[str]) -> list[str]:
    """Quantized layers tied to another tensor, by transformers' mapping or by shared storage."""
    counts = Counter(_ident(t) for t in model.state_dict().values() if not t.is_meta)
    tied = tied_layers(model)
    return [
        name
        for name in quantized
        if name in tied or counts[_ident(linear_weight(model.get_submodule(name)))] > 1
    ]


def _ident(tensor: torch.Tensor) -> tuple[int, int | torch.SymInt]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()


def write_configs(
    qm: QuantizedModel, directory: Path, quant_config: dict[str, Any], untie: bool = False
) -> None:
    """``config.json`` with ``quant_config``, ``quantization_config.json``, generation config, tokenizer."""
    config = cast("PretrainedConfig", qm.model.config)  # a transformers model's; nn.Module can't say
    previous = getattr(config, "quantization_config", None)
    architectures = config.architectures
    config.quantization_config = quant_config
    # As save_pretrained does: a model built with from_config has none, and vLLM then guesses
    # the model class (a Qwen3 without it is served as an embedding model).
    config.architectures = architectures or [type(qm.model).__name__]
    try:
        with untied(config) if untie else nullcontext():
            config.save_pretrained(directory)
    finally:
        config.architectures = architectures
        if previous is None:
            del config.quantization_config
        else:
            config.quantization_config = previous
    (directory / "quantization_config.json").write_text(json.dumps(quant_config, indent=2) + "\n")
    generation = getattr(qm.model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(directory)
    if qm.tokenizer is not None:
        qm.tokenizer.save_pretrained(directory)
