"""Checkpoint formats, by name. Each entry saves a :class:`QuantizedModel` to a directory.

External format strings ("auto-round", "auto_round:auto_gptq") appear only in these modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autoround.errors import SchemeError
from autoround.formats import auto_round
from autoround.formats.auto_round import (
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    SCHEME_KEYS,
    CheckpointSpec,
    parse_config,
)
from autoround.formats.awq_layout import convert_layer as convert_awq_layer
from autoround.formats.awq_layout import expect_awq
from autoround.formats.dense import load_dense
from autoround.formats.gptq_layout import pack_layer, unpack_layer
from autoround.formats.loading import load_quantized
from autoround.formats.tensor_check import check_checkpoint_tensors, read_headers
from autoround.output_guard import check_output_dir, model_source
from autoround.quantized_model import QuantizedModel

SaveFn = Callable[..., Path]

#: Format name -> save function ``save(qm, output_dir, overwrite=False) -> Path``.
FORMATS: dict[str, SaveFn] = {
    "auto_round": auto_round.save,
}


def check_format(format: str) -> str:
    """The registry key of ``format``; unknown names raise SchemeError listing the known ones.

    Entry points call this before any work, so a typo never costs a quantization run.
    """
    key = format.strip().lower() if isinstance(format, str) else format
    if key not in FORMATS:
        raise SchemeError(f"unknown format {format!r}; allowed: {sorted(FORMATS)}")
    return key


def save(
    qm: QuantizedModel, output_dir: str | Path, format: str = "auto_round", overwrite: bool = False
) -> Path:
    """Save ``qm`` in the named format (see :func:`check_format`), refusing an output that would
    overwrite or lie inside the directory the model was loaded from."""
    key = check_format(format)
    check_output_dir(output_dir, {"model": model_source(qm.model)})
    return FORMATS[key](qm, output_dir, overwrite=overwrite)


__all__ = [
    "FORMATS",
    "GPTQ_PACKING",
    "PLAIN_PACKING",
    "QUANT_METHOD",
    "SCHEME_KEYS",
    "CheckpointSpec",
    "check_checkpoint_tensors",
    "check_format",
    "convert_awq_layer",
    "expect_awq",
    "load_dense",
    "load_quantized",
    "pack_layer",
    "parse_config",
    "read_headers",
    "save",
    "unpack_layer",
]
