"""GGUF, the file llama.cpp (and Ollama, LM Studio) run: one entry per ``llama-quantize`` recipe.

``gguf:q4_k_m`` (and ``gguf:q4_0`` ... ``gguf:q6_k``, ``gguf:q2_k_s``, ``gguf:q3_k_s/m/l``,
``gguf:q4_k_s``, ``gguf:q5_k_s/m``; a bare ``gguf:q4_k`` is ``q4_k_m``, as in llama-quantize) writes
one ``.gguf`` file through the ``gguf`` package's ``GGUFWriter``: the architecture's keys and the
tokenizer (:mod:`~autoround.formats.gguf_metadata`) and every tensor under llama.cpp's name.

Before any work the entry's plan (:func:`plan_gguf`) gives every layer llama.cpp's block type
for the recipe (:mod:`~autoround.formats.gguf_recipes`; a layer ``layer_config`` names keeps its
scheme), applies llama.cpp's fallback to layers whose rows a type cannot hold (reported), and
refuses an architecture the writer does not know. The algorithms then quantize every layer with
its block type; the token embedding and the output matrix, which llama.cpp also quantizes, are
quantized at write time with llama.cpp's round-to-nearest (unless ``layer_config`` quantized the
output layer). Norms and biases are written as f32, layers left in 16 bits as f16.

Beside formats of another kind (``auto_round,auto_gptq,gguf:q4_k_m``) the recipe's entry in
:data:`CONVERTERS` writes the file instead: the run quantized for those formats (integer codes), and
each quantized layer is quantized again at write time with the type the recipe gives it
(:mod:`autoround.formats.combine` states the rule).

:func:`export_gguf` writes a model unquantized (``f16``, ``bf16`` or ``f32``), e.g. for
llama.cpp's own quantizer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import Any, cast

import gguf
import numpy as np
import torch
from torch import nn

from autoround.dtypes import DTYPES
from autoround.dtypes.gguf_blocks import BLOCK_TYPES, block_type
from autoround.errors import FormatError
from autoround.formats.base import Capabilities, Format
from autoround.formats.gguf_metadata import (
    Architecture,
    architecture_of,
    check_tokenizer,
    write_hparams,
    write_tokenizer,
)
from autoround.formats.gguf_recipes import (
    ALIASES,
    F16,
    RECIPES,
    ModelShape,
    Recipe,
    choose,
    fallback,
    recipe_named,
)
from autoround.formats.gguf_tensors import GGUF_DATA_TYPES, encode_layer, float_tensor, quantize_tensor
from autoround.io import atomic_dir
from autoround.layer_plan import LayerDecision, LayerPlan
from autoround.layer_quant import LayerQuant
from autoround.modeling.blocks import linear_shape
from autoround.quantized_model import QuantizedModel
from autoround.schemes import Scheme

logger = logging.getLogger(__name__)

QUANT_METHOD = "gguf"
CAPABILITIES = Capabilities(
    data_types=GGUF_DATA_TYPES, bits=tuple(sorted({b.bits for b in BLOCK_TYPES.values()}))
)
RUNTIMES = ("llama.cpp", "Ollama", "LM Studio")
FLOAT_TYPES = {
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "f32": gguf.LlamaFileType.ALL_F32,
}


def scheme_of(type_name: str) -> Scheme | None:
    """The scheme of a ggml block type (None for ``f16``)."""
    entry = BLOCK_TYPES.get(type_name)
    if entry is None:
        return None
    return Scheme(bits=entry.bits, group_size=entry.group, sym=entry.sym, data_type=entry.data_type)


def _name_map(config: Any, arch: Architecture) -> gguf.TensorNameMap:
    model_arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch.gguf_arch]
    return gguf.get_tensor_name_map(model_arch, config.num_hidden_layers)


def gguf_name(names: gguf.TensorNameMap, key: str) -> str:
    """llama.cpp's name of a transformers state-dict key (``blk.0.attn_q.weight``)."""
    found = names.get_name(key, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise FormatError(f"tensor {key!r} has no name in llama.cpp's tensor map for this architecture")
    return found


def _shape(config: Any, arch: Architecture) -> ModelShape:
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return ModelShape(arch.gguf_arch, config.num_hidden_layers, config.num_attention_heads // kv_heads)


def _tied(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "tie_word_embeddings", False))


def plan_gguf(model: nn.Module, plan: LayerPlan, recipe: Recipe) -> LayerPlan:
    """``plan`` with llama.cpp's block type for every layer the recipe decides (not those
    ``layer_config`` named, nor the ones left 16-bit), and llama.cpp's fallback applied to every
    quantized layer whose rows its type cannot hold (logged, and named in the decision's reason).

    Raises:
        FormatError: the architecture is not one the GGUF writer knows.
    """
    config = cast(Any, model).config
    arch = architecture_of(config)
    names, shape, tied = _name_map(config, arch), _shape(config, arch), _tied(model)
    decisions = dict(plan.layers)
    fallbacks = []
    for layer, decision in plan.layers.items():
        ncols = linear_shape(model.get_submodule(layer))[1]
        if decision.scheme is None:
            continue
        wanted = _wanted_type(decision, recipe, gguf_name(names, layer + ".weight"), ncols, shape, tied)
        if wanted is None:
            continue  # not a GGUF scheme: the format refuses it, naming the layer
        kept = fallback(wanted, ncols)
        reason = (
            decision.reason if decision.reason.startswith("layer_config") else f"gguf:{recipe.name}: {wanted}"
        )
        if kept != wanted:
            fallbacks.append(f"{layer} ({ncols} inputs): {wanted} -> {kept}")
            reason += (
                f" (llama.cpp's fallback: {ncols} inputs are no whole number of {wanted} blocks -> {kept})"
            )
        decisions[layer] = LayerDecision(scheme_of(kept), reason)
    if fallbacks:
        logger.warning(
            "%d layers fall back to another GGUF type (llama.cpp's rule), e.g. %s",
            len(fallbacks),
            "; ".join(fallbacks[:3]),
        )
    return dataclasses.replace(plan, layers=decisions)


def _wanted_type(
    decision: LayerDecision, recipe: Recipe, name: str, ncols: int, shape: ModelShape, tied: bool
) -> str | None:
    scheme = decision.scheme
    assert scheme is not None
    if not decision.reason.startswith("layer_config"):
        return choose(recipe, name, ncols, shape, tied)
    entry = block_type(scheme.data_type, scheme.bits, scheme.sym, scheme.group_size)
    return entry.name if entry is not None else None


def check_quantized(qm: QuantizedModel) -> list[str]:
    """Refusals before anything is written: no tokenizer, an unknown architecture or tokenizer,
    a layer whose rows its block type cannot hold (quantized without the GGUF plan)."""
    problems = []
    try:
        architecture_of(cast(Any, qm.model).config)
        if qm.tokenizer is None:
            problems.append("a GGUF file holds the tokenizer: pass the model's tokenizer")
        else:
            check_tokenizer(qm.tokenizer)
    except FormatError as exc:
        problems.append(str(exc))
    for layer, quant in qm.layers.items():
        s = quant.scheme
        entry = block_type(s.data_type, s.bits, s.sym, s.group_size)
        ncols = linear_shape(qm.model.get_submodule(layer))[1]
        if entry is not None and ncols % entry.block:
            problems.append(
                f"{layer}: {ncols} inputs are no whole number of {entry.name} blocks ({entry.block}); "
                f"quantize with a gguf format in the run so that its plan falls back to another type"
            )
    return problems


def _permuted_rows(rows: int, heads: int) -> np.ndarray:
    """llama.cpp's row order of a q/k projection (``LlamaModel.permute``: RoPE halves interleaved)."""
    index = np.arange(rows)
    return index.reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(rows)


def _tensor_data(
    key: str,
    name: str,
    tensor: torch.Tensor,
    layers: dict[str, LayerQuant],
    types: dict[str, str],
    float_type: str,
) -> tuple[np.ndarray, str]:
    layer = key.rpartition(".")[0]
    if key.endswith(".weight") and layer in layers:
        return encode_layer(tensor, layers[layer], f"{layer} ({name})")
    if tensor.ndim == 1:
        return float_tensor(tensor, "f32"), "f32"
    chosen = types.get(name, float_type)
    if chosen in BLOCK_TYPES:
        return quantize_tensor(tensor, chosen, name), chosen
    return float_tensor(tensor, chosen), chosen


def _write_tensors(
    writer: gguf.GGUFWriter,
    model: nn.Module,
    arch: Architecture,
    layers: dict[str, LayerQuant],
    recipe: Recipe | None,
    float_type: str,
    requantize: Collection[str] = (),
) -> None:
    config = cast(Any, model).config
    names, tied = _name_map(config, arch), _tied(model)
    state = model.state_dict()
    if tied:
        state.pop("lm_head.weight", None)  # llama.cpp reads the tied output from token_embd
    types = {}
    if recipe is not None:
        shape = _shape(config, arch)
        keys = [
            k for k in ("model.embed_tokens.weight", "lm_head.weight") if k.rpartition(".")[0] not in layers
        ]
        for key in [*keys, *(f"{layer}.weight" for layer in requantize)]:
            if key in state:
                name = gguf_name(names, key)
                ncols = state[key].shape[1]
                types[name] = fallback(choose(recipe, name, ncols, shape, tied), ncols)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    heads = {"attn_q": config.num_attention_heads, "attn_k": kv_heads}
    for key, tensor in state.items():
        name = gguf_name(names, key)
        data, type_name = _tensor_data(key, name, tensor, layers, types, float_type)
        part = re.sub(r"^blk\.\d+\.|\.(weight|bias)$", "", name)
        if arch.permute_qk and part in heads:
            data = data[_permuted_rows(data.shape[0], heads[part])]
        raw = None if type_name in ("f32", "f16", F16) else gguf.GGMLQuantizationType[type_name.upper()]
        writer.add_tensor(name, np.ascontiguousarray(data), raw_dtype=raw)


def write_gguf(
    model: nn.Module,
    tokenizer: Any,
    path: Path,
    layers: dict[str, LayerQuant],
    recipe: Recipe | None = None,
    float_type: str = "f16",
    requantize: Collection[str] = (),
) -> Path:
    """Write ``model`` to the file ``path``: its quantized ``layers`` encoded, the embedding, the
    output and the ``requantize`` layers quantized with the recipe's types (or, without a recipe,
    every other 2-D tensor as ``float_type``), its metadata and tokenizer."""
    config = cast(Any, model).config
    arch = architecture_of(config)
    if tokenizer is None:
        raise FormatError("a GGUF file holds the tokenizer: pass the model's tokenizer")
    file_type = recipe.file_type if recipe is not None else int(FLOAT_TYPES[float_type])
    writer = gguf.GGUFWriter(path, arch.gguf_arch, use_temp_file=True)
    try:
        write_hparams(writer, config, arch, _model_name(config), file_type)
        write_tokenizer(writer, tokenizer, config.vocab_size)
        _write_tensors(writer, model, arch, layers, recipe, float_type, requantize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    logger.info("wrote %s (%d quantized layers)", path, len(layers))
    return path


def _model_name(config: Any) -> str:
    raw = getattr(config, "_name_or_path", "") or getattr(config, "model_type", "model")
    return Path(str(raw)).name or "model"


def file_name(config: Any, type_label: str) -> str:
    """``<model>-<TYPE>.gguf``, the model named by its source directory."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", _model_name(config)).strip("-") or "model"
    return f"{stem}-{type_label.upper()}.gguf"


def _save(qm: QuantizedModel, directory: Path, recipe: Recipe) -> None:
    config = cast(Any, qm.model).config
    write_gguf(qm.model, qm.tokenizer, directory / file_name(config, recipe.name), qm.layers, recipe)


def _save_converted(qm: QuantizedModel, directory: Path, recipe: Recipe) -> None:
    """The file of a recipe written beside formats of another kind: every quantized layer holds
    that kind's weights (integer codes), quantized again here with the type the recipe gives it."""
    config = cast(Any, qm.model).config
    path = directory / file_name(config, recipe.name)
    write_gguf(qm.model, qm.tokenizer, path, {}, recipe, requantize=tuple(qm.layers))


def _known_architecture(model: nn.Module, plan: LayerPlan) -> LayerPlan:
    """The plan of a converting entry: unchanged, once the architecture is one the writer knows."""
    architecture_of(cast(Any, model).config)
    return plan


def export_gguf(
    model: nn.Module, tokenizer: Any, output_dir: str | Path, float_type: str = "f16", overwrite: bool = False
) -> Path:
    """Write ``model`` unquantized as ``<output_dir>/<model>-F16.gguf`` (``bf16``, ``f32``), atomically;
    returns the file."""
    if float_type not in FLOAT_TYPES:
        raise FormatError(f"unknown GGUF float type {float_type!r}; allowed: {sorted(FLOAT_TYPES)}")
    config = cast(Any, model).config
    name = file_name(config, float_type)
    with atomic_dir(Path(output_dir), overwrite=overwrite) as tmp:
        write_gguf(model, tokenizer, tmp / name, {}, None, float_type)
    return Path(output_dir) / name


def gguf_file(directory: str | Path) -> Path:
    """The ``.gguf`` file a GGUF checkpoint directory holds."""
    found = sorted(Path(directory).glob("*.gguf"))
    if len(found) != 1:
        raise FormatError(f"{directory} holds {len(found)} .gguf files; expected one")
    return found[0]


def _entry(name: str, recipe: Recipe) -> Format:
    return Format(
        f"gguf:{name}",
        QUANT_METHOD,
        CAPABILITIES,
        writer=partial(_save, recipe=recipe),
        runtimes=RUNTIMES,
        check_quantized=check_quantized,
        plan=partial(plan_gguf, recipe=recipe),
    )


def _converter(entry: Format) -> Format:
    recipe = recipe_named(entry.name.partition(":")[2])
    return dataclasses.replace(
        entry,
        capabilities=CONVERTED,
        writer=partial(_save_converted, recipe=recipe),
        plan=_known_architecture,
    )


#: One entry per recipe and alias (registered in :mod:`autoround.formats.registry` by one line).
FORMATS = [_entry(name, recipe) for name, recipe in RECIPES.items()] + [
    _entry(alias, RECIPES[target]) for alias, target in ALIASES.items()
]
#: What an integer-quantized layer becomes in a GGUF file written beside integer formats: any
#: integer scheme, re-quantized at write time.
CONVERTED = Capabilities(data_types=("int",), bits=DTYPES["int"].allowed_bits)
#: The same recipes, written from a run quantized for integer formats (``auto_round,gguf:q4_k_m``;
#: :mod:`autoround.formats.combine` picks them): each quantized layer re-quantized at write time
#: to the type the recipe gives it, by llama.cpp's round-to-nearest.
CONVERTERS = {entry.name: _converter(entry) for entry in FORMATS}
