"""The registry of checkpoint formats, and the one path from a ``quantization_config`` to a spec.

Every loader (core's :func:`~autoround.loading.load_quantized` and
:func:`~autoround.loading.load_dense`, autoround-hf's quantizer) turns a checkpoint's config into
a :class:`~autoround.formats.base.CheckpointSpec` through :func:`spec_for`; savers go through
:func:`check_format`, which admits only formats that can be written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoround.errors import CheckpointError, FormatError
from autoround.formats import auto_round, awq, gptq
from autoround.formats.base import CheckpointSpec, Format, quant_method_of

#: Format name -> entry. ``auto_round`` reads every auto-round config; the entries after it read
#: layouts that are also named inside auto-round configs (transformers' and Intel's names for
#: GPTQ and AWQ), so when several read a config the last registered wins.
FORMATS: dict[str, Format] = {
    entry.name: entry
    for entry in (
        auto_round.FORMAT,
        gptq.FORMAT,
        awq.FORMAT,
    )
}


def writable_formats() -> list[str]:
    """Names of the formats a quantized model can be saved in."""
    return sorted(name for name, entry in FORMATS.items() if entry.writable)


def check_format(format: str) -> str:
    """The registry key of ``format``, a format that can be written.

    Entry points call this before any work, so a typo never costs a quantization run.

    Raises:
        FormatError: an unknown name, or a format only read here; both list the allowed names.
    """
    key = format.strip().lower() if isinstance(format, str) else format
    allowed = writable_formats()
    if key in FORMATS and key not in allowed:
        raise FormatError(
            f"format {format!r} can be read but not written (only its reader is built); allowed: {allowed}"
        )
    if key not in FORMATS:
        raise FormatError(f"unknown format {format!r}; allowed: {allowed}")
    return str(key)


def reader_for(config: Mapping[str, Any]) -> Format:
    """The entry that reads ``config``.

    Raises:
        FormatError: no entry reads it; the message names the quant_methods read.
    """
    readers = [entry for entry in FORMATS.values() if entry.can_read(config)]
    if not readers:
        methods = ", ".join(dict.fromkeys(entry.quant_method for entry in FORMATS.values()))
        raise FormatError(
            f"quant_method {quant_method_of(config)!r} cannot be loaded as auto-round; allowed: {methods}"
        )
    return readers[-1]


def to_auto_round_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``quantization_config`` (auto-round, GPTQ, AWQ) as auto-round keys.

    Raises:
        FormatError: an unknown ``quant_method``.
        CheckpointError: a variant of a known one that is not read (GPTQ act-order, ...).
    """
    return reader_for(config).to_auto_round(config)


def spec_for(config: Mapping[str, Any], block_names: Sequence[str] = ()) -> CheckpointSpec:
    """The spec of a checkpoint's ``quantization_config``, by the format that reads it.

    ``block_names`` (the model's decoder blocks) fill in a config that names none (GPTQ's).

    Raises:
        FormatError: no format reads the config.
        CheckpointError: the format refuses it, naming the key at fault.
    """
    return reader_for(config).read_spec(config, block_names)


def quantization_config_of(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``quantization_config`` of a checkpoint directory's ``config.json``."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a checkpoint directory")
    config = json.loads(path.read_text())
    if "quantization_config" not in config:
        raise CheckpointError(f"{path} has no quantization_config: not a quantized checkpoint")
    return dict(config["quantization_config"])


def checkpoint_spec(checkpoint_dir: str | Path, block_names: Sequence[str] = ()) -> CheckpointSpec:
    """The spec of a checkpoint directory (see :func:`spec_for`)."""
    return spec_for(quantization_config_of(checkpoint_dir), block_names)
