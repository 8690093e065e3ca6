"""AutoAWQ "gemm" checkpoints (``quant_method: awq``): Intel's ``auto_awq`` export, and reading
them and auto-round's AWQ-packed ones (``auto_round:auto_awq``).

Their tensors are the layout of :mod:`autoround.formats.awq_layout` (4-bit, zero points without
offset), repacked into the GPTQ layout once, at load time: the spec describes the repacked layers
(auto-round's plain packing) and says ``layout="awq"``. Intel names the layout
``auto_round:auto_awq`` in its exports, transformers ``auto_round:awq`` in its conversion.

Writing follows Intel's exporter: one scheme for every quantized layer (AWQ's config has no
per-layer entries), the layers left in 16 bits listed in ``modules_to_not_convert``,
``zero_point: false`` for symmetric schemes (whose zero points, 8, are stored all the same),
float32 tensors saved as float16 and ``config.json`` saying float16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autoround._version import __version__
from autoround.errors import CheckpointError
from autoround.formats import awq_layout
from autoround.formats.auto_round import parse_config
from autoround.formats.base import (
    PLAIN_PACKING,
    QUANT_METHOD,
    SCHEME_KEYS,
    CheckpointSpec,
    Format,
    quant_method_of,
)
from autoround.formats.checkpoint import write_checkpoint
from autoround.layer_plan import LayerPlan
from autoround.quantized_model import QuantizedModel
from autoround.schemes import UNQUANTIZED_BITS

METHOD = "awq"
#: ``packing_format`` values naming the AWQ gemm layout (transformers' converted, Intel's exported).
PACKINGS = ("auto_round:awq", "auto_round:auto_awq")
VERSIONS = ("gemm",)
CAPABILITIES = awq_layout.SINGLE_SCHEME
RUNTIMES = ("autoround", "transformers + autoround-hf", "vLLM awq (stock)", "AutoAWQ")


def can_read(config: Mapping[str, Any]) -> bool:
    """An AWQ config, or an auto-round one whose packing names the AWQ layout."""
    return quant_method_of(config) == METHOD or config.get("packing_format") in PACKINGS


def to_auto_round(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as auto-round keys (Intel's conversion; idempotent); errors say what is allowed.

    ``zero_point: false`` (Intel's symmetric export, its zero points stored as 8) reads as
    symmetric; the stored zero points are used either way.
    """
    data = dict(config)
    if str(data.get("version", "gemm")).lower() not in VERSIONS:
        raise CheckpointError(
            f"AWQ version {data.get('version')!r} is not supported; allowed: {list(VERSIONS)}"
        )
    if quant_method_of(data) == METHOD:
        data["sym"] = not data.get("zero_point", True)
    # AWQ's own keys, also in the config transformers converts to auto-round keys before us
    blocks = data.pop("to_quant_block_names", None)
    data.setdefault("block_name_to_quantize", blocks)
    skipped = data.pop("modules_to_not_convert", None) or []
    if skipped:
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
    if spec.default.bits not in awq_layout.CAPABILITIES.bits:
        raise CheckpointError(
            f"quantization_config.bits={spec.default.bits}: the AWQ gemm layout stores bits "
            f"{list(awq_layout.CAPABILITIES.bits)} only"
        )
    return CheckpointSpec(
        spec.default, spec.packing_format, spec.block_names, spec.extra_config, layout="awq"
    )


def _not_converted(plan: LayerPlan) -> list[str]:
    """Every Linear-like layer left in 16 bits (``lm_head`` among them unless quantized)."""
    return [name for name, decision in plan.layers.items() if decision.scheme is None]


def to_config(qm: QuantizedModel) -> dict[str, Any]:
    """The ``quantization_config`` Intel's ``auto_awq`` export writes."""
    scheme = qm.scheme.to_dict()
    config: dict[str, Any] = {k: scheme[k] for k in SCHEME_KEYS}
    config.update(qm.settings)
    config.update(
        to_quant_block_names=",".join(qm.plan.block_names),
        autoround_version=__version__,
        provider="auto-round",
        quant_method=METHOD,
        zero_point=not qm.scheme.sym,
        version=VERSIONS[0],
        modules_to_not_convert=_not_converted(qm.plan),
    )
    return config


def write(qm: QuantizedModel, directory: Path) -> None:
    """Intel's ``auto_awq`` checkpoint of ``qm`` into ``directory``."""
    tensors = lambda name, weight, quant: awq_layout.pack_layer(weight, quant)  # noqa: E731
    write_checkpoint(qm, directory, to_config(qm), tensors, export_dtype=torch.float16)


FORMAT = Format(
    "auto_awq", METHOD, CAPABILITIES, can_read, to_auto_round, read_spec,
    writer=write, runtimes=RUNTIMES,
)  # fmt: skip
