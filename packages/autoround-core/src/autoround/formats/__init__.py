"""Checkpoint formats, by name (:data:`FORMATS`): what each stores, writes and reads.

External format strings ("auto-round", "auto_round:auto_gptq", "gptq", "awq") appear only in
these modules. Adding a format: one module defining its :class:`Format` entry, one line in
:mod:`autoround.formats.registry`, its tests.
"""

from __future__ import annotations

from pathlib import Path

from autoround.formats.auto_round import parse_config
from autoround.formats.awq_layout import convert_layer as convert_awq_layer
from autoround.formats.awq_layout import expect_awq
from autoround.formats.base import (
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    SCHEME_KEYS,
    Capabilities,
    CheckpointSpec,
    Format,
)
from autoround.formats.gptq import IGNORED_TENSORS as GPTQ_IGNORED_TENSORS
from autoround.formats.gptq_layout import pack_layer, unpack_layer
from autoround.formats.registry import (
    FORMATS,
    check_format,
    checkpoint_spec,
    quantization_config_of,
    reader_for,
    spec_for,
    to_auto_round_config,
    writable_formats,
)
from autoround.output_guard import check_output_dir, model_source
from autoround.quantized_model import QuantizedModel


def save(
    qm: QuantizedModel, output_dir: str | Path, format: str = "auto_round", overwrite: bool = False
) -> Path:
    """Save ``qm`` in the named format (see :func:`check_format`), refusing an output that would
    overwrite or lie inside the directory the model was loaded from."""
    key = check_format(format)
    check_output_dir(output_dir, {"model": model_source(qm.model)})
    return FORMATS[key].save(qm, output_dir, overwrite=overwrite)


__all__ = [
    "FORMATS",
    "GPTQ_IGNORED_TENSORS",
    "GPTQ_PACKING",
    "PLAIN_PACKING",
    "QUANT_METHOD",
    "SCHEME_KEYS",
    "Capabilities",
    "CheckpointSpec",
    "Format",
    "check_format",
    "checkpoint_spec",
    "convert_awq_layer",
    "expect_awq",
    "pack_layer",
    "parse_config",
    "quantization_config_of",
    "reader_for",
    "save",
    "spec_for",
    "to_auto_round_config",
    "unpack_layer",
    "writable_formats",
]
