"""Reading AutoAWQ "gemm" checkpoints (``quant_method: awq``, or auto-round's AWQ export); writing
is not built.

Their tensors are the layout of :mod:`autoround.formats.awq_layout` (4-bit, asymmetric, zero
points without offset), repacked into the GPTQ layout once, at load time: the spec describes
the repacked layers (auto-round's plain packing) and says ``layout="awq"``. Intel names the
layout ``auto_round:auto_awq`` in its exports, transformers ``auto_round:awq`` in its conversion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoround.errors import CheckpointError
from autoround.formats.auto_round import parse_config
from autoround.formats.awq_layout import AWQ_BITS
from autoround.formats.base import (
    PLAIN_PACKING,
    QUANT_METHOD,
    Capabilities,
    CheckpointSpec,
    Format,
    quant_method_of,
)
from autoround.schemes import UNQUANTIZED_BITS

METHOD = "awq"
#: ``packing_format`` values naming the AWQ gemm layout (transformers' converted, Intel's exported).
PACKINGS = ("auto_round:awq", "auto_round:auto_awq")
VERSIONS = ("gemm",)
CAPABILITIES = Capabilities(data_types=("int",), bits=(AWQ_BITS,))


def can_read(config: Mapping[str, Any]) -> bool:
    """An AWQ config, or an auto-round one whose packing names the AWQ layout."""
    return quant_method_of(config) == METHOD or config.get("packing_format") in PACKINGS


def to_auto_round(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as auto-round keys (Intel's conversion; idempotent); errors say what is allowed."""
    data = dict(config)
    if str(data.get("version", "gemm")).lower() not in VERSIONS:
        raise CheckpointError(
            f"AWQ version {data.get('version')!r} is not supported; allowed: {list(VERSIONS)}"
        )
    if quant_method_of(data) == METHOD:
        if not data.get("zero_point", True):
            raise CheckpointError("AWQ checkpoints without zero points are not supported")
        data["sym"] = False
        data.setdefault("block_name_to_quantize", data.pop("to_quant_block_names", None))
        skipped = data.pop("modules_to_not_convert", None) or []
        data["extra_config"] = {
            **{name: {"bits": UNQUANTIZED_BITS, "data_type": "fp"} for name in skipped},
            **(data.get("extra_config") or {}),
        }
    for alias, key in (("w_bit", "bits"), ("q_group_size", "group_size")):  # AutoAWQ's own names
        if alias in data:
            data.setdefault(key, data.pop(alias))
    fmt = data.get("packing_format")
    data["packing_format"] = fmt if fmt in PACKINGS else PACKINGS[0]
    data["quant_method"] = QUANT_METHOD
    return data


def read_spec(config: Mapping[str, Any], block_names: Sequence[str] = ()) -> CheckpointSpec:
    """The spec of the layers once repacked (plain packing), ``layout="awq"`` for the loaders."""
    data = {**to_auto_round(config), "packing_format": PLAIN_PACKING}
    spec = parse_config(data).with_default_blocks(block_names)
    if not CAPABILITIES.stores(spec.default):
        raise CheckpointError(
            f"quantization_config.bits={spec.default.bits}: the AWQ gemm layout stores bits "
            f"{list(CAPABILITIES.bits)} only"
        )
    return CheckpointSpec(
        spec.default, spec.packing_format, spec.block_names, spec.extra_config, layout="awq"
    )


FORMAT = Format("awq", METHOD, CAPABILITIES, can_read, to_auto_round, read_spec)
