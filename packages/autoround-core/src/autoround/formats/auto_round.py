"""The ``auto_round`` checkpoint format, as Intel auto-round writes it.

Symmetric schemes use packing ``auto_round:auto_gptq`` (GPTQ layout, zero points stored minus
one); asymmetric ones ``auto_round`` (same layout, zero points stored as they are). The
top-level scheme sits in ``config.json``'s ``quantization_config`` (also written to
``quantization_config.json``); layers that differ are listed in ``extra_config`` by exact name.
Unquantized tensors keep their names and dtypes; tied embeddings stay tied.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from autoround._version import __version__
from autoround.errors import CheckpointError
from autoround.formats.gptq_layout import pack_layer
from autoround.io import atomic_dir, save_safetensors_sharded
from autoround.modeling.blocks import linear_weight
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS, Scheme

logger = logging.getLogger(__name__)

QUANT_METHOD = "auto-round"
GPTQ_PACKING = "auto_round:auto_gptq"
PLAIN_PACKING = "auto_round"
#: What is subtracted from a zero point before it is stored, per packing format.
ZERO_OFFSET = {GPTQ_PACKING: 1, PLAIN_PACKING: 0}
SCHEME_KEYS = ("bits", "group_size", "sym", "data_type")
REQUIRED_KEYS = ("quant_method", "packing_format", *SCHEME_KEYS)
DEFAULT_SHARD_BYTES = 5 * 2**30
#: Bit widths the GPTQ int32 layout is built for here (Intel also packs 5-7 bits; not yet we).
PACKABLE_BITS = (2, 3, 4, 8)


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
        if not in_blocks and scheme is None:
            continue  # outside the blocks, unquantized is the default
        extra[name] = _extra_entry(scheme, default, in_blocks)
    if extra:
        config["extra_config"] = extra
    return config


@dataclass(frozen=True)
class CheckpointSpec:
    """What a checkpoint's ``quantization_config`` says, validated."""

    default: Scheme
    packing_format: str
    block_names: tuple[str, ...]
    extra_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def zero_offset(self) -> int:
        """Amount added back to stored zero points."""
        return ZERO_OFFSET[self.packing_format]

    def scheme_for(self, layer_name: str) -> Scheme | None:
        """The scheme a layer was stored with, or None if it was left in 16 bits."""
        entry = self.extra_config.get(layer_name)
        if entry is None:
            for pattern, cfg in self.extra_config.items():
                if re.search(pattern, layer_name):
                    entry = cfg
                    break
        in_blocks = any(layer_name.startswith(b + ".") for b in self.block_names)
        if entry is None:
            return self.default if in_blocks else None
        fields = {k: v for k, v in entry.items() if k in {*SCHEME_KEYS, "act_bits"} and v is not None}
        if int(fields.get("bits", self.default.bits)) >= UNQUANTIZED_BITS:
            return None
        return self.default.replace(**fields)


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
    if default.bits not in PACKABLE_BITS:
        raise CheckpointError(
            f"quantization_config.bits={default.bits} cannot be unpacked; allowed: {list(PACKABLE_BITS)}"
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
        if getattr(module, "bias", None) is not None:
            yield f"{name}.bias", module.bias.detach().cpu().to(torch.float16)


def _dense_tensors(qm: QuantizedModel) -> dict[str, torch.Tensor]:
    """Unquantized tensors, with later aliases of one storage (tied weights) dropped."""
    skip = {f"{name}.{p}" for name in qm.layers for p in ("weight", "bias")}
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in qm.model.state_dict().items():
        if key in skip:
            continue
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
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
    """Write the checkpoint atomically: into a temp dir beside ``output_dir``, then renamed."""
    target = Path(output_dir)
    unpackable = sorted({q.scheme.bits for q in qm.layers.values()} - set(PACKABLE_BITS))
    if unpackable:
        raise NotImplementedError(
            f"the auto_round format packs bits {list(PACKABLE_BITS)} only; "
            f"this model has {unpackable}-bit layers"
        )
    quant_config = to_config(qm)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        tensors = _dense_tensors(qm)
        tensors.update(_packed_tensors(qm))
        save_safetensors_sharded(tensors, tmp, max_shard_bytes=max_shard_bytes)
        _write_configs(qm, tmp, quant_config)
    logger.info("saved %d quantized layers in format auto_round to %s", len(qm.layers), target)
    return target


def _write_configs(qm: QuantizedModel, directory: Path, quant_config: dict[str, Any]) -> None:
    config = qm.model.config
    previous = getattr(config, "quantization_config", None)
    config.quantization_config = quant_config
    try:
        config.save_pretrained(directory)
    finally:
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


def read_spec(checkpoint_dir: str | Path) -> CheckpointSpec:
    """Parse the ``quantization_config`` of a checkpoint directory's ``config.json``."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a checkpoint directory")
    config = json.loads(path.read_text())
    if "quantization_config" not in config:
        raise CheckpointError(f"{path} has no quantization_config: not a quantized checkpoint")
    return parse_config(config["quantization_config"])
