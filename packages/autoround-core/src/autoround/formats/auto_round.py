"""The ``auto_round`` checkpoint format, as Intel auto-round writes it.

Symmetric schemes use packing ``auto_round:auto_gptq`` (GPTQ layout, zero points stored minus
one); asymmetric ones ``auto_round`` (same layout, zero points stored as they are). The
top-level scheme sits in ``config.json``'s ``quantization_config`` (also written to
``quantization_config.json``); block layers that differ from it, and every quantized layer
outside the blocks (``lm_head``, with all its fields), are listed in ``extra_config`` by exact
name. Unquantized tensors keep their names and dtypes; tied embeddings stay tied, unless the
tied ``lm_head`` is quantized: then the embedding is stored dense, ``lm_head`` packed, and
``config.json`` says ``tie_word_embeddings: false``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from tqdm.auto import tqdm

from autoround._version import __version__
from autoround.errors import CheckpointError
from autoround.formats.base import (
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    SCHEME_KEYS,
    ZERO_OFFSET,
    Capabilities,
    CheckpointSpec,
    Format,
    quant_method_of,
)
from autoround.formats.gptq_layout import pack_layer
from autoround.io import atomic_dir, save_safetensors_sharded
from autoround.modeling.blocks import linear_weight
from autoround.packing import SUPPORTED_BITS
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS, Scheme

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("quant_method", "packing_format", *SCHEME_KEYS)
DEFAULT_SHARD_BYTES = 5 * 2**30
#: What this format stores: integers of the bit widths the GPTQ int32 packing is built for
#: (Intel also packs 5-7 bits; not yet we).
CAPABILITIES = Capabilities(data_types=("int",), bits=SUPPORTED_BITS)


def packing_format_for(scheme: Scheme) -> str:
    """Intel's choice: GPTQ's zero-minus-one layout for symmetric schemes."""
    return GPTQ_PACKING if scheme.sym else PLAIN_PACKING


def _extra_entry(scheme: Scheme | None, default: Scheme, in_blocks: bool) -> dict[str, Any]:
    if scheme is None:
        return {"bits": UNQUANTIZED_BITS, "data_type": "fp"}
    fields = scheme.to_dict()
    if not in_blocks:  # layers outside the blocks are listed with every field, as Intel does
        return {k: fields[k] for k in SCHEME_KEYS}
    base = default.to_dict()
    return {k: v for k, v in fields.items() if base.get(k) != v}


def to_config(qm: QuantizedModel) -> dict[str, Any]:
    """The ``quantization_config`` dict for a quantized model."""
    default = qm.scheme
    config: dict[str, Any] = {k: default.to_dict()[k] for k in SCHEME_KEYS}
    config.update(qm.settings)
    config.update(
        autoround_version=__version__,
        block_name_to_quantize=",".join(qm.plan.block_names),
        quant_method=QUANT_METHOD,
        packing_format=packing_format_for(default),
    )
    extra: dict[str, dict[str, Any]] = {}
    for name, scheme in qm.plan.overrides(default).items():
        in_blocks = any(name.startswith(b + ".") for b in qm.plan.block_names)
        extra[name] = _extra_entry(scheme, default, in_blocks)
    for name in _dense_block_matrices(qm):
        extra[name] = _extra_entry(None, default, in_blocks=True)
    if extra:
        config["extra_config"] = extra
    return config


def _dense_block_matrices(qm: QuantizedModel) -> list[str]:
    """Modules inside the blocks that hold a matrix the plan does not cover, stored dense.

    A MoE router (``mlp.gate``) is no Linear in transformers but is one in vLLM, whose reader
    would assume the default scheme inside the blocks: it is listed as 16-bit.
    """
    plan = qm.plan
    return [
        name
        for name, module in qm.model.named_modules()
        if name not in plan.layers
        and any(name.startswith(block + ".") for block in plan.block_names)
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.ndim == 2
        and not isinstance(module, torch.nn.Embedding)
    ]


def parse_config(config: Mapping[str, Any]) -> CheckpointSpec:
    """Validate a ``quantization_config``; errors name the offending key and what is allowed."""
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(
            f"quantization_config is missing key(s) {missing}; required: {list(REQUIRED_KEYS)}"
        )
    if config["quant_method"] != QUANT_METHOD:
        raise CheckpointError(
            f"quantization_config.quant_method is {config['quant_method']!r}; "
            f"this format reads {QUANT_METHOD!r}"
        )
    if config["packing_format"] not in ZERO_OFFSET:
        raise CheckpointError(
            f"quantization_config.packing_format {config['packing_format']!r} is not supported; "
            f"allowed: {sorted(ZERO_OFFSET)}"
        )
    try:
        default = Scheme.from_dict({k: config[k] for k in SCHEME_KEYS})
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"quantization_config: {exc}") from exc
    if default.data_type not in CAPABILITIES.data_types:
        raise CheckpointError(
            f"quantization_config.data_type={default.data_type!r} cannot be read from this format; "
            f"allowed: {list(CAPABILITIES.data_types)}"
        )
    if default.bits not in CAPABILITIES.bits:
        raise CheckpointError(
            f"quantization_config.bits={default.bits} cannot be unpacked; allowed: {list(CAPABILITIES.bits)}"
        )
    blocks = config.get("block_name_to_quantize") or ""
    if isinstance(blocks, str):
        blocks = [b.strip() for b in blocks.split(",") if b.strip()]
    extra = config.get("extra_config") or {}
    if not isinstance(extra, Mapping):
        raise CheckpointError(
            f"quantization_config.extra_config must be a mapping, got {type(extra).__name__}"
        )
    return CheckpointSpec(
        default, config["packing_format"], tuple(blocks), {k: dict(v) for k, v in extra.items()}
    )


def _packed_tensors(qm: QuantizedModel) -> Iterator[tuple[str, torch.Tensor]]:
    packing = packing_format_for(qm.scheme)
    for name, quant in tqdm(qm.layers.items(), desc="packing", unit="layer"):
        module = qm.model.get_submodule(name)
        weight = linear_weight(module).detach().cpu()
        for key, tensor in pack_layer(weight, quant, ZERO_OFFSET[packing]).items():
            yield f"{name}.{key}", tensor
        bias = getattr(module, "bias", None)
        if bias is not None:
            yield f"{name}.bias", bias.detach().cpu().to(torch.float16)


def _dense_tensors(qm: QuantizedModel) -> dict[str, torch.Tensor]:
    """Unquantized tensors, with later aliases of one storage (tied weights) dropped."""
    skip = {f"{name}.{p}" for name in qm.layers for p in ("weight", "bias")}
    seen: set[tuple[int, int | torch.SymInt]] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in qm.model.state_dict().items():
        if key in skip:
            continue
        ident = _ident(tensor)
        if ident in seen:
            continue
        seen.add(ident)
        out[key] = tensor.detach().cpu().contiguous()
    return out


def save(
    qm: QuantizedModel,
    output_dir: str | Path,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write the checkpoint atomically: into a temp dir beside ``output_dir``, then renamed.

    What the format stores was checked by :meth:`Format.save` (its ``capabilities``)."""
    target = Path(output_dir)
    quant_config = to_config(qm)
    untie = tied_quantized(qm.model, qm.layers)
    if untie:
        logger.info("%s is tied to the embedding and quantized: saved untied", untie)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        tensors = _dense_tensors(qm)
        tensors.update(_packed_tensors(qm))
        save_safetensors_sharded(tensors, tmp, max_shard_bytes=max_shard_bytes)
        _write_configs(qm, tmp, quant_config, bool(untie))
    logger.info("saved %d quantized layers in format auto_round to %s", len(qm.layers), target)
    return target


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


def _write_configs(
    qm: QuantizedModel, directory: Path, quant_config: dict[str, Any], untie: bool = False
) -> None:
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


def can_read(config: Mapping[str, Any]) -> bool:
    """An auto-round ``quantization_config`` in the GPTQ layout (GPTQ's and AWQ's readers go first)."""
    return quant_method_of(config) == QUANT_METHOD


def to_auto_round(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config itself, ``quant_method`` filled in (a config without one is taken as ours)."""
    return {**config, "quant_method": QUANT_METHOD}


def read_spec(config: Mapping[str, Any], block_names: Sequence[str] = ()) -> CheckpointSpec:
    """:func:`parse_config`, blocks filled in from ``block_names`` when the config names none."""
    return parse_config(config).with_default_blocks(block_names)


FORMAT = Format("auto_round", QUANT_METHOD, CAPABILITIES, can_read, to_auto_round, read_spec, writer=save)
