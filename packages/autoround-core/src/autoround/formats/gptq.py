"""GPTQ checkpoints (AutoGPTQ / GPTQModel, ``quant_method: gptq``): Intel's ``auto_gptq`` export,
and reading.

Their tensors are the GPTQ layout of :mod:`autoround.formats.gptq_layout` plus ``g_idx`` (each
input's group; act-order is never written, ``desc_act: false``): v1 checkpoints store zero
points minus one (auto-round's ``auto_round:auto_gptq`` packing), ``gptq_v2`` ones as they are
(auto-round's plain packing). Layers whose scheme differs from the default are GPTQModel's
per-module ``dynamic`` overrides (``+:regex`` with bits / group_size / sym, ``-:regex`` for a
layer left in 16 bits), as Intel writes them; float32 tensors are saved as float16 and
``config.json`` says float16 (Intel's exporter does both). Act-order (``desc_act``) is refused
on reading. transformers' conversion of such a config to auto-round keys names the packing
``auto_round:gptq``; that config is read here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autoround._version import __version__
from autoround.errors import CheckpointError
from autoround.formats.auto_round import CAPABILITIES, parse_config
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
from autoround.formats.checkpoint import write_checkpoint
from autoround.formats.gptq_layout import act_order_indices, pack_layer, zero_problems
from autoround.layer_plan import LayerPlan
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS

METHOD = "gptq"
#: transformers' ``packing_format`` for a GPTQ config converted to auto-round keys.
CONVERTED_PACKING = "auto_round:gptq"
CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
#: Tensors GPTQ writers add that our layers do not hold: act-order indices, trivial when
#: desc_act is False (which is required).
IGNORED_TENSORS = (r"\.g_idx$",)
#: The per-layer keys GPTQModel's ``dynamic`` overrides carry (Intel's GPTQ_REQUIRED_CONFIG_KEYS).
DYNAMIC_KEYS = ("bits", "group_size", "sym")
#: What the export stores: auto_round's integers, but no per-tensor scale (GPTQ has none).
WRITE_CAPABILITIES = Capabilities(CAPABILITIES.data_types, CAPABILITIES.bits, per_tensor=False)
RUNTIMES = (
    "autoround",
    "transformers + autoround-hf",
    "vLLM gptq (stock; on the CPU 4-bit sym only)",
    "GPTQModel",
)


def can_read(config: Mapping[str, Any]) -> bool:
    """A GPTQ config, or one transformers converted from it."""
    return quant_method_of(config) == METHOD or config.get("packing_format") == CONVERTED_PACKING


def to_auto_round(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as auto-round keys (Intel's conversion; idempotent); errors say what is allowed.

    ``dynamic`` overrides become ``extra_config`` patterns (a ``-:`` one keeps its layers in 16 bits).
    """
    if config.get("desc_act"):
        raise CheckpointError(
            "GPTQ checkpoints with desc_act=True (act-order) are not supported; need desc_act=False"
        )
    fmt = str(config.get("checkpoint_format", "gptq"))
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(
            f"GPTQ checkpoint_format {fmt!r} is not supported; allowed: {list(CHECKPOINT_FORMATS)}"
        )
    data = {**config, "packing_format": CONVERTED_PACKING, "quant_method": QUANT_METHOD}
    dynamic = data.pop("dynamic", None)
    if dynamic:
        data["extra_config"] = {**_from_dynamic(dynamic), **(data.get("extra_config") or {})}
    return data


def _from_dynamic(dynamic: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(dynamic, Mapping):
        raise CheckpointError(f"GPTQ 'dynamic' must map '+:regex' / '-:regex' to fields, got {dynamic!r}")
    extra: dict[str, dict[str, Any]] = {}
    for key, fields in dynamic.items():
        sign, _, pattern = str(key).partition(":")
        if sign not in ("+", "-") or not pattern:
            raise CheckpointError(f"GPTQ 'dynamic' key {key!r} must start with '+:' or '-:'")
        if sign == "-":
            extra[pattern] = {"bits": UNQUANTIZED_BITS, "data_type": "fp"}
        else:
            extra[pattern] = {k: v for k, v in dict(fields or {}).items() if k in DYNAMIC_KEYS}
    return extra


def read_spec(config: Mapping[str, Any], block_names: Sequence[str] = ()) -> CheckpointSpec:
    """The spec of a GPTQ checkpoint: v1 zero points stored minus one, v2 ones as they are."""
    data = to_auto_round(config)
    v2 = data.get("checkpoint_format") == "gptq_v2"
    data["packing_format"] = PLAIN_PACKING if v2 else GPTQ_PACKING
    spec = parse_config(data).with_default_blocks(block_names)
    return CheckpointSpec(
        spec.default, spec.packing_format, spec.block_names, spec.extra_config,
        ignored_tensors=IGNORED_TENSORS,
    )  # fmt: skip


def _in_blocks(name: str, plan: LayerPlan) -> bool:
    return any(name.startswith(block + ".") for block in plan.block_names)


def _dynamic(qm: QuantizedModel) -> tuple[dict[str, dict[str, Any]], bool]:
    """Intel's ``dynamic`` overrides (exact layer names as ``.*name.*`` regexes) and whether a layer
    outside the blocks (``lm_head``) is quantized."""
    dynamic: dict[str, dict[str, Any]] = {}
    lm_head = False
    for name, scheme in qm.plan.overrides(qm.scheme).items():
        regex = f".*{re.escape(name)}.*"
        if scheme is None:
            dynamic[f"-:{regex}"] = {}
            continue
        lm_head = lm_head or not _in_blocks(name, qm.plan)
        fields = scheme.to_dict()
        dynamic[f"+:{regex}"] = {k: fields[k] for k in DYNAMIC_KEYS}
    return dynamic, lm_head


def _modules_in_block(plan: LayerPlan) -> list[list[str]] | None:
    """GPTQ's ``modules_in_block_to_quantize`` (per block list, the quantized layer names within a
    block), or None when every layer in the blocks is quantized (Intel's rule)."""
    groups, partial = [], False
    for blocks in plan.block_names:
        quantized: set[str] = set()
        skipped: set[str] = set()
        for name, decision in plan.layers.items():
            match = re.match(rf"{re.escape(blocks)}\.\d+\.(.+)", name)
            if match:
                (quantized if decision.scheme is not None else skipped).add(match.group(1))
        partial = partial or bool(skipped)
        groups.append(sorted(quantized))
    return groups if partial else None


def to_config(qm: QuantizedModel) -> dict[str, Any]:
    """The ``quantization_config`` Intel's ``auto_gptq`` export writes."""
    scheme = qm.scheme.to_dict()
    config: dict[str, Any] = {k: scheme[k] for k in SCHEME_KEYS}
    config.update(qm.settings)
    config["autoround_version"] = __version__
    dynamic, lm_head = _dynamic(qm)
    if dynamic:
        config["dynamic"] = dynamic
    config.update(
        lm_head=lm_head,
        provider="auto-round",
        quant_method=METHOD,
        desc_act=False,
        true_sequential=False,
        damp_percent=0.01,
    )
    modules = _modules_in_block(qm.plan)
    if modules is not None:
        config["modules_in_block_to_quantize"] = modules
    return config


def _layer_tensors(name: str, weight: torch.Tensor, quant: Any) -> dict[str, torch.Tensor]:
    tensors = pack_layer(weight, quant, ZERO_OFFSET[GPTQ_PACKING])
    tensors["g_idx"] = act_order_indices(quant.scheme, weight.shape[1])
    return tensors


def write(qm: QuantizedModel, directory: Path) -> None:
    """Intel's ``auto_gptq`` checkpoint of ``qm`` into ``directory``."""
    write_checkpoint(qm, directory, to_config(qm), _layer_tensors, export_dtype=torch.float16)


FORMAT = Format(
    "auto_gptq", METHOD, WRITE_CAPABILITIES, can_read, to_auto_round, read_spec,
    writer=write, runtimes=RUNTIMES, check_quantized=zero_problems,
)  # fmt: skip
