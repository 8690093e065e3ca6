"""Reading GPTQ checkpoints (AutoGPTQ / GPTQModel, ``quant_method: gptq``); writing is not built.

Their tensors are the GPTQ layout of :mod:`autoround.formats.gptq_layout`: v1 checkpoints
store zero points minus one (auto-round's ``auto_round:auto_gptq`` packing), ``gptq_v2`` ones
as they are (auto-round's plain packing). Act-order (``desc_act``) and per-module ``dynamic``
overrides are refused. transformers' conversion of such a config to auto-round keys names the
packing ``auto_round:gptq``; that config is read here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoround.errors import CheckpointError
from autoround.formats.auto_round import CAPABILITIES, parse_config
from autoround.formats.base import (
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    CheckpointSpec,
    Format,
    quant_method_of,
)

METHOD = "gptq"
#: transformers' ``packing_format`` for a GPTQ config converted to auto-round keys.
CONVERTED_PACKING = "auto_round:gptq"
CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
#: Tensors GPTQ writers add that our layers do not hold: act-order indices, trivial when
#: desc_act is False (which is required).
IGNORED_TENSORS = (r"\.g_idx$",)


def can_read(config: Mapping[str, Any]) -> bool:
    """A GPTQ config, or one transformers converted from it."""
    return quant_method_of(config) == METHOD or config.get("packing_format") == CONVERTED_PACKING


def to_auto_round(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as auto-round keys (Intel's conversion; idempotent); errors say what is allowed."""
    if config.get("desc_act"):
        raise CheckpointError(
            "GPTQ checkpoints with desc_act=True (act-order) are not supported; need desc_act=False"
        )
    if config.get("dynamic"):
        raise CheckpointError("GPTQ checkpoints with per-module 'dynamic' overrides are not supported")
    fmt = str(config.get("checkpoint_format", "gptq"))
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(
            f"GPTQ checkpoint_format {fmt!r} is not supported; allowed: {list(CHECKPOINT_FORMATS)}"
        )
    return {**config, "packing_format": CONVERTED_PACKING, "quant_method": QUANT_METHOD}


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


FORMAT = Format("gptq", METHOD, CAPABILITIES, can_read, to_auto_round, read_spec)
